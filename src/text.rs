//! Text from outside made safe to show: names, banners and server replies.
//!
//! - [`escape_controls`]: control characters (C0, DEL, C1) and the bidirectional-text controls
//!   a name could use to disguise itself are written as `\x1b` / `\u{202e}`, so a name or reply
//!   cannot move the cursor, recolour a terminal or reorder what is printed after it. Used by
//!   `RelPath`'s `Display`, by every [`crate::transport::TransportError`], by listing problems,
//!   and so in human output, JSON and the state database alike.
//! - [`redact`]: every secret ferry has read (passwords) replaced by `<redacted>`. The secrets
//!   are held in a process-wide registry, filled where a password is read
//!   ([`register_secret`]): a reply that echoes the password, or a library's trace line, is
//!   scrubbed wherever it ends up, without every caller having to know the password. This is
//!   the last line of defence; the first is never putting a secret into a message at all.
//! - [`clean`]: both, and cut to a length, for text quoted in an error.
//!
//! What it does not do: it never changes a name used on the wire or on disk (`RelPath::as_str`
//! stays exact); it is for showing only.

use std::borrow::Cow;
use std::sync::RwLock;

/// Secrets shorter than this are not redacted: a short password is likely a word or a name
/// that also appears in ordinary messages, which would be blanked out everywhere. (ferry never
/// puts a password into a message itself; this is only for servers that echo one.)
const MIN_SECRET_LEN: usize = 6;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember a secret so that [`redact`] removes it from everything shown from now on.
pub fn register_secret(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut secrets) = SECRETS.write()
        && !secrets.iter().any(|s| s == secret)
    {
        secrets.push(secret.to_owned());
        // Also as JSON would escape it, for JSON log lines.
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json.trim_matches('"');
        if json != secret {
            secrets.push(json.to_owned());
        }
        // Longest first, so that a secret containing another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `<redacted>`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(secrets) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), "<redacted>");
    }
    Cow::Owned(out)
}

/// Whether a character must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control and bidirectional-control characters escaped.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// Redacted, escaped, and at most `max_chars` characters of it (then `…` and how much was cut).
pub fn clean(text: &str, max_chars: usize) -> String {
    let redacted = redact(text);
    let escaped = escape_controls(&redacted);
    let total = escaped.chars().count();
    if total <= max_chars {
        return escaped.into_owned();
    }
    let kept: String = escaped.chars().take(max_chars).collect();
    format!("{kept}… ({} more characters)", total - max_chars)
}

/// A `tracing` writer for stderr that redacts every registered secret from each log line
/// (human or JSON) before it is written: whatever a library traces, no password reaches the
/// log.
pub struct RedactingStderr;

/// One log line being written; redacted and written out when dropped.
pub struct RedactingLine(Vec<u8>);

impl std::io::Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let line = String::from_utf8_lossy(&self.0);
        let line = redact(&line);
        let mut write = || {
            let _ = std::io::stderr().write_all(line.as_bytes());
        };
        match SUSPENDER.read() {
            Ok(s) if s.is_some() => {
                if let Some(suspend) = s.as_ref() {
                    suspend(&mut write);
                }
            }
            _ => write(),
        }
    }
}

/// Runs a log write with whatever is drawn on the terminal (a progress bar) out of the way.
pub type LogSuspender = Box<dyn Fn(&mut dyn FnMut()) + Send + Sync>;

static SUSPENDER: RwLock<Option<LogSuspender>> = RwLock::new(None);

/// Set (or clear) what log lines are written through, so that they do not garble a progress
/// bar.
pub fn set_log_suspender(suspender: Option<LogSuspender>) {
    if let Ok(mut s) = SUSPENDER.write() {
        *s = suspender;
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine(Vec::with_capacity(256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a progress bar is drawn (a suspender is set), each log line is written through it,
    /// so the bar is cleared first and drawn again after; without one, lines go straight out.
    #[test]
    fn log_lines_go_through_the_progress_bars_suspender_while_one_is_drawn() {
        use std::io::Write as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::fmt::MakeWriter as _;
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        set_log_suspender(Some(Box::new(|write: &mut dyn FnMut()| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            write();
        })));
        {
            let mut line = RedactingStderr.make_writer();
            let _ = line.write_all(b"ferry test: a log line while a bar is drawn\n");
        }
        set_log_suspender(None);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        {
            let mut line = RedactingStderr.make_writer();
            let _ = line.write_all(b"ferry test: a log line with no bar\n");
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "no suspender, no detour");
    }

    #[test]
    fn controls_are_escaped_and_the_rest_is_kept() {
        let cases = [
            ("plain name.txt", "plain name.txt"),
            ("Ünïcødé – ✓", "Ünïcødé – ✓"),
            ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
            ("tab\there", "tab\\x09here"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_controls(input), want, "{input:?}");
        }
    }

    #[test]
    fn registered_secrets_are_redacted_even_json_escaped() {
        register_secret("s3cr\"et-pass");
        assert_eq!(
            redact("530 bad password s3cr\"et-pass for user"),
            "530 bad password <redacted> for user"
        );
        assert_eq!(
            redact(r#"{"msg":"PASS s3cr\"et-pass"}"#),
            r#"{"msg":"PASS <redacted>"}"#
        );
        register_secret("ferry");
        assert_eq!(
            redact("ferry was here"),
            "ferry was here",
            "too short to redact"
        );
    }

    #[test]
    fn clean_cuts_long_text() {
        let long = "x".repeat(1000);
        let c = clean(&long, 10);
        assert_eq!(c, "xxxxxxxxxx… (990 more characters)");
        assert_eq!(clean("short\n", 10), "short\\x0a");
    }
}
