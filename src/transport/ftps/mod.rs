//! FTPS transport over suppaftp's tokio client with rustls.
