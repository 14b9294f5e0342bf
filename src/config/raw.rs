//! The job file as written: a YAML node tree that remembers where every key and value sits,
//! and the serde types that mirror the version-1 format.
//!
//! What it does: [`parse_document`] turns the text into a [`Node`] tree (with saphyr-parser, whose
//! events carry line and column), and [`deserialize_collecting`] deserializes one node into a
//! raw type through our own serde `Deserializer`, so every serde error (unknown key, wrong type,
//! bad enum value, bad duration) comes back with the position of the key or value at fault.
//! When an entry of a mapping is wrong, that entry is set aside and the rest is deserialized
//! again, so one typo does not hide the next one.
//!
//! What it does not do: no semantic checks (does the endpoint exist, is the path a directory, is
//! the cron expression valid), no defaults, no environment. That is `validate.rs`, which turns
//! these raw types into the domain types of `model.rs`.
//!
//! Why a tree of our own instead of `serde_norway::from_str`: serde_norway stops at the first
//! error and only knows the position of that one; ferry must report every problem at once.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::model::Secret;

/// A place in the job file, 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_span(span: &Span) -> Mark {
        Mark {
            line: span.start.line(),
            // saphyr counts columns from 0; editors and compilers count from 1.
            column: span.start.col() + 1,
        }
    }
}

/// One problem found in a job file, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    /// The job or endpoint it belongs to, such as "job `acme`" or "endpoint `acme`".
    pub context: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn new(mark: Mark, context: Option<&str>, message: impl Into<String>) -> Problem {
        Problem {
            line: mark.line,
            column: mark.column,
            context: context.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    /// `12:5: job `acme`: unknown endpoint ...`; the caller puts the file name in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        f.write_str(&self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// The node tree
// ---------------------------------------------------------------------------------------------

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub mark: Mark,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `plain` is false for quoted and block scalars: those are always strings, never numbers,
    /// booleans or null (YAML 1.2 core schema).
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in file order; duplicate keys are kept so that they can be reported.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// The entries of a mapping; nothing for any other node.
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            NodeValue::Mapping(entries) => entries,
            _ => &[],
        }
    }

    /// The first entry whose key is the scalar `key`.
    pub fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
    }

    /// The value under `key`, when this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The text of a scalar (whatever it resolves to).
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether this is YAML's null: an empty value, `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar { text, plain: true } if is_null_text(text))
    }

    /// How many nodes this tree holds (to bound what aliases may expand to).
    fn size(&self) -> usize {
        match &self.value {
            NodeValue::Scalar { .. } => 1,
            NodeValue::Sequence(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeValue::Mapping(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// A job file is small: these bounds only stop a hostile or broken file from exhausting the
/// stack (deep nesting) or memory (aliases of aliases, "billion laughs").
const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 100_000;

/// Parse the text of a job file into its node tree; `None` for an empty file.
///
/// A syntax error is one problem with its line and column (the parser cannot go on after it).
pub fn parse_document(text: &str) -> Result<Option<Node>, Problem> {
    let mut builder = TreeBuilder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
    };
    builder.read_stream()
}

struct TreeBuilder<'input> {
    parser: Parser<'input, saphyr_parser::StrInput<'input>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

impl<'input> TreeBuilder<'input> {
    fn read_stream(&mut self) -> Result<Option<Node>, Problem> {
        let mut root = None;
        loop {
            let (event, span) = self.next_event()?;
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) if root.is_some() => {
                    return Err(Problem::new(
                        Mark::from_span(&span),
                        None,
                        "a job file holds one YAML document; remove the second `---`",
                    ));
                }
                Event::DocumentStart(_) => {
                    let (event, span) = self.next_event()?;
                    root = Some(self.read_node(event, span, 0)?);
                }
                other => {
                    return Err(Problem::new(
                        Mark::from_span(&span),
                        None,
                        format!("unexpected YAML event {other:?}"),
                    ));
                }
            }
        }
    }

    fn next_event(&mut self) -> Result<(Event<'input>, Span), Problem> {
        match self.parser.next_event() {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(error)) => Err(problem_from_scan(&error)),
            None => Err(Problem::new(
                Mark { line: 1, column: 1 },
                None,
                "unexpected end of the YAML text",
            )),
        }
    }

    fn read_node(
        &mut self,
        event: Event<'input>,
        span: Span,
        depth: usize,
    ) -> Result<Node, Problem> {
        let mark = Mark::from_span(&span);
        if depth > MAX_DEPTH {
            return Err(Problem::new(
                mark,
                None,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == ScalarStyle::Plain;
                let text = text.into_owned();
                (
                    Node {
                        mark,
                        value: NodeValue::Scalar { text, plain },
                    },
                    anchor,
                )
            }
            Event::SequenceStart(anchor, _tag) => {
                let items = self.read_sequence(depth)?;
                (
                    Node {
                        mark,
                        value: NodeValue::Sequence(items),
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, _tag) => {
                let entries = self.read_mapping(depth)?;
                (
                    Node {
                        mark,
                        value: NodeValue::Mapping(entries),
                    },
                    anchor,
                )
            }
            Event::Alias(id) => (self.expand_alias(id, mark)?, 0),
            other => {
                return Err(Problem::new(
                    mark,
                    None,
                    format!("unexpected YAML event {other:?}"),
                ));
            }
        };
        self.count_nodes(1, mark)?;
        // saphyr numbers anchors from 1; 0 means "no anchor".
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn read_sequence(&mut self, depth: usize) -> Result<Vec<Node>, Problem> {
        let mut items = Vec::new();
        loop {
            let (event, span) = self.next_event()?;
            if event == Event::SequenceEnd {
                return Ok(items);
            }
            items.push(self.read_node(event, span, depth + 1)?);
        }
    }

    fn read_mapping(&mut self, depth: usize) -> Result<Vec<(Node, Node)>, Problem> {
        let mut entries = Vec::new();
        loop {
            let (event, span) = self.next_event()?;
            if event == Event::MappingEnd {
                return Ok(entries);
            }
            let key = self.read_node(event, span, depth + 1)?;
            let (event, span) = self.next_event()?;
            let value = self.read_node(event, span, depth + 1)?;
            entries.push((key, value));
        }
    }

    fn expand_alias(&mut self, id: usize, mark: Mark) -> Result<Node, Problem> {
        let Some(target) = self.anchors.get(&id) else {
            return Err(Problem::new(mark, None, "alias to an unknown anchor"));
        };
        let mut node = target.clone();
        self.count_nodes(node.size(), mark)?;
        // Problems inside an alias are reported where it is used; the nodes inside keep the
        // anchor's positions, which is where the text to fix is.
        node.mark = mark;
        Ok(node)
    }

    fn count_nodes(&mut self, added: usize, mark: Mark) -> Result<(), Problem> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(Problem::new(
                mark,
                None,
                format!("more than {MAX_NODES} YAML nodes (are aliases expanding recursively?)"),
            ));
        }
        Ok(())
    }
}

fn problem_from_scan(error: &ScanError) -> Problem {
    let mark = Mark {
        line: error.marker().line(),
        column: error.marker().col() + 1,
    };
    Problem::new(mark, None, format!("YAML syntax error: {}", error.info()))
}

// ---------------------------------------------------------------------------------------------
// Scalars, resolved as in the YAML 1.2 core schema
// ---------------------------------------------------------------------------------------------

fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool_text(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

fn parse_number_text(text: &str) -> Option<Number> {
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Number::Unsigned);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return u64::from_str_radix(octal, 8).ok().map(Number::Unsigned);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<u64>() {
            return Some(Number::Unsigned(n));
        }
        return text.parse::<i64>().ok().map(Number::Signed);
    }
    parse_float_text(text).map(Number::Float)
}

fn parse_float_text(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also accepts "inf" and "nan", which YAML reads as strings: allow only the characters
    // of a YAML float.
    let yaml_float_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    let has_digit = text.bytes().any(|b| b.is_ascii_digit());
    if yaml_float_chars && has_digit {
        text.parse::<f64>().ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// serde over the node tree
// ---------------------------------------------------------------------------------------------

/// A serde error that knows where it happened.
#[derive(Debug)]
pub struct DeError {
    message: String,
    /// Set by the innermost node that saw the error.
    mark: Option<Mark>,
    /// Indices of the mapping entries the error is inside, outermost first: the first one tells
    /// [`deserialize_collecting`] which entry to set aside before trying again.
    entry_path: Vec<usize>,
}

impl DeError {
    fn located(mut self, mark: Mark) -> DeError {
        if self.mark.is_none() {
            self.mark = Some(mark);
        }
        self
    }

    fn within_entry(mut self, index: usize) -> DeError {
        self.entry_path.insert(0, index);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            mark: None,
            entry_path: Vec::new(),
        }
    }
}

/// The result of deserializing one node with [`deserialize_collecting`].
#[derive(Debug)]
pub struct Collected<T> {
    /// The value built from the entries that were fine; `None` when the node itself is unusable
    /// (not a mapping where one is expected, for example).
    pub value: Option<T>,
    /// Each serde error with the place of the key or value at fault.
    pub errors: Vec<(Mark, String)>,
    /// Keys of the entries set aside because of an error: validation must not also call them
    /// missing.
    pub set_aside: Vec<String>,
}

/// Deserialize `node` into `T`, collecting every error instead of stopping at the first.
///
/// After an error inside a mapping entry, that entry (the innermost one the error is inside,
/// such as `attempts` in `retry: { attempts: -1 }`) is removed and `T` is deserialized again:
/// each round removes one entry, so this ends.
pub fn deserialize_collecting<T: DeserializeOwned>(node: &Node) -> Collected<T> {
    let mut current = node.clone();
    let mut errors = Vec::new();
    let mut set_aside = Vec::new();
    loop {
        let error = match T::deserialize(NodeDeserializer { node: &current }) {
            Ok(value) => {
                return Collected {
                    value: Some(value),
                    errors,
                    set_aside,
                };
            }
            Err(error) => error,
        };
        errors.push((error.mark.unwrap_or(current.mark), error.message));
        match remove_entry(&mut current, &error.entry_path) {
            Some(key) => set_aside.push(key),
            None => {
                return Collected {
                    value: None,
                    errors,
                    set_aside,
                };
            }
        }
    }
}

/// Remove the innermost mapping entry on `path` (entry indices, outermost first) and return its
/// dotted key (`retry.attempts`); `None` when `path` names no entry of `node`.
fn remove_entry(node: &mut Node, path: &[usize]) -> Option<String> {
    let (&index, deeper) = path.split_first()?;
    let NodeValue::Mapping(entries) = &mut node.value else {
        return None;
    };
    let (key, value) = entries.get_mut(index)?;
    let key = key.as_scalar().unwrap_or_default().to_owned();
    if let Some(inner) = remove_entry(value, deeper) {
        return Some(format!("{key}.{inner}"));
    }
    entries.remove(index);
    Some(key)
}

/// A serde `Deserializer` reading one node of the tree.
struct NodeDeserializer<'a> {
    node: &'a Node,
}

impl NodeDeserializer<'_> {
    fn visit_scalar<'de, V: Visitor<'de>>(
        text: &str,
        plain: bool,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if !plain {
            return visitor.visit_str(text);
        }
        if is_null_text(text) {
            return visitor.visit_unit();
        }
        if let Some(b) = parse_bool_text(text) {
            return visitor.visit_bool(b);
        }
        match parse_number_text(text) {
            Some(Number::Unsigned(n)) => visitor.visit_u64(n),
            Some(Number::Signed(n)) => visitor.visit_i64(n),
            Some(Number::Float(n)) => visitor.visit_f64(n),
            None => visitor.visit_str(text),
        }
    }

    fn visit_mapping<'de, V: Visitor<'de>>(
        &self,
        entries: &[(Node, Node)],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mut access = MappingAccess {
            entries,
            next: 0,
            current: None,
        };
        match visitor.visit_map(&mut access) {
            Ok(value) => Ok(value),
            // An error no node claimed comes from the visitor itself: a duplicate key (just
            // after that key was read) or a missing one (after the last entry).
            Err(error) if error.mark.is_none() => match access.current {
                Some(index) => Err(error.located(entries[index].0.mark).within_entry(index)),
                None => Err(error.located(self.node.mark)),
            },
            Err(error) => Err(error),
        }
    }
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            NodeValue::Scalar { text, plain } => Self::visit_scalar(text, *plain, visitor),
            NodeValue::Sequence(items) => visitor.visit_seq(SequenceAccess {
                items: items.iter(),
            }),
            NodeValue::Mapping(entries) => self.visit_mapping(entries, visitor),
        };
        result.map_err(|e| e.located(self.node.mark))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            let mark = self.node.mark;
            visitor.visit_some(self).map_err(|e| e.located(mark))
        }
    }

    /// Any scalar reads as a string when a string is wanted (`user: 1234`, `tls_max_version:
    /// 1.3`): the user wrote text, and only its spelling matters here.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor
                .visit_str::<DeError>(text)
                .map_err(|e| e.located(self.node.mark)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let mark = self.node.mark;
        let result = match &self.node.value {
            NodeValue::Scalar { text, .. } => visitor.visit_enum(ScalarEnum { text, mark }),
            NodeValue::Mapping(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                visitor.visit_enum(MappingEnum { key, value })
            }
            NodeValue::Mapping(_) => Err(de::Error::invalid_type(
                de::Unexpected::Other("mapping with several keys"),
                &visitor,
            )),
            NodeValue::Sequence(_) => Err(de::Error::invalid_type(de::Unexpected::Seq, &visitor)),
        };
        result.map_err(|e| e.located(mark))
    }

    /// Only a mapping makes a struct: serde's derive would also read a sequence as the
    /// fields in order, which in a job file is always a mistake.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            NodeValue::Mapping(entries) => self
                .visit_mapping(entries, visitor)
                .map_err(|e| e.located(self.node.mark)),
            NodeValue::Sequence(_) => {
                let error: DeError = de::Error::invalid_type(de::Unexpected::Seq, &visitor);
                Err(error.located(self.node.mark))
            }
            NodeValue::Scalar { .. } if self.node.is_null() => {
                let unexpected = de::Unexpected::Other("empty value");
                let error: DeError = de::Error::invalid_type(unexpected, &visitor);
                Err(error.located(self.node.mark))
            }
            NodeValue::Scalar { .. } => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 bytes byte_buf unit unit_struct
        newtype_struct seq tuple tuple_struct map
    }
}

struct MappingAccess<'a> {
    entries: &'a [(Node, Node)],
    next: usize,
    /// The entry whose key was read last; `None` before the first and after the last.
    current: Option<usize>,
}

impl<'de> MapAccess<'de> for MappingAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let index = self.next;
        let Some((key, _)) = self.entries.get(index) else {
            self.current = None;
            return Ok(None);
        };
        self.current = Some(index);
        seed.deserialize(NodeDeserializer { node: key })
            .map(Some)
            .map_err(|e| e.within_entry(index))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let index = self.next;
        self.next += 1;
        let Some((_, value)) = self.entries.get(index) else {
            return Err(de::Error::custom("value asked for before its key"));
        };
        seed.deserialize(NodeDeserializer { node: value })
            .map_err(|e| e.within_entry(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len().saturating_sub(self.next))
    }
}

struct SequenceAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> SeqAccess<'de> for SequenceAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDeserializer { node }).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An enum written as a bare word: `verify: hash`.
struct ScalarEnum<'a> {
    text: &'a str,
    mark: Mark,
}

impl<'de, 'a> EnumAccess<'de> for ScalarEnum<'a> {
    type Error = DeError;
    type Variant = ScalarEnum<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, ScalarEnum<'a>), DeError> {
        let deserializer: de::value::StrDeserializer<'_, DeError> = self.text.into_deserializer();
        let value = seed
            .deserialize(deserializer)
            .map_err(|e| e.located(self.mark))?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for ScalarEnum<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(self.needs_value())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.needs_value())
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(self.needs_value())
    }
}

impl ScalarEnum<'_> {
    fn needs_value(&self) -> DeError {
        let text = self.text;
        de::Error::custom(format!("`{text}` needs a value: write `{text}: ...`"))
    }
}

/// An enum written as a one-key mapping: `after_upload: { move_to: /srv/sent }`.
struct MappingEnum<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> EnumAccess<'de> for MappingEnum<'a> {
    type Error = DeError;
    type Variant = MappingEnum<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, MappingEnum<'a>), DeError> {
        let value = seed.deserialize(NodeDeserializer { node: self.key })?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for MappingEnum<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.value.is_null() {
            return Ok(());
        }
        let key = self.key.as_scalar().unwrap_or_default();
        let error: DeError = de::Error::custom(format!("`{key}` takes no value"));
        Err(error.located(self.value.mark))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDeserializer { node: self.value })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDeserializer { node: self.value }, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(NodeDeserializer { node: self.value }, visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// The version-1 job file, as written
// ---------------------------------------------------------------------------------------------
//
// Every field is optional here, even the required ones: a missing key is reported by
// validation with the place of the job or endpoint, and a field set aside because of an error
// must not also be reported as missing.

/// The top level. Endpoints and jobs are deserialized one by one (see `validate.rs`), so that a
/// bad one does not hide the others; here they are only named, for the list of known keys.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with version, endpoints and jobs"
)]
pub struct RawFile {
    pub version: Option<u32>,
    pub state_dir: Option<PathBuf>,
    /// `127.0.0.1:9464`: serve Prometheus metrics there (the agent only).
    pub metrics: Option<String>,
    /// How long in-flight transfers may finish after SIGTERM before they are aborted.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    // Named here only so that they count as known keys; validation reads their nodes.
    #[expect(dead_code, reason = "validate.rs reads the endpoints node itself")]
    pub endpoints: Option<de::IgnoredAny>,
    #[expect(dead_code, reason = "validate.rs reads the jobs node itself")]
    pub jobs: Option<de::IgnoredAny>,
}

/// One endpoint under `endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an endpoint: a mapping with host, user, a password source, ..."
)]
pub struct RawEndpoint {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<RawTlsMode>,
    pub allow_insecure: Option<bool>,
    pub user: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_credential: Option<String>,
    /// Wrapped at once so that no Debug output of a raw endpoint shows it.
    #[serde(default, deserialize_with = "deserialize_secret")]
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub pin_sha256: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub data_mode: Option<RawDataMode>,
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub tls_max_version: Option<RawTlsVersion>,
    /// `50000-50100`: local ports for active-mode data connections.
    pub active_ports: Option<String>,
    /// Connect passive data connections to the address a PASV reply names, rather than to the
    /// control connection's address. Off by default.
    pub use_pasv_address: Option<bool>,
    /// Bounds on what the server may send.
    pub limits: Option<RawLimits>,
}

/// `limits: { line_length: 16384, entries_per_dir: 1000000, depth: 64 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { line_length: 16384, entries_per_dir: 1000000, depth: 64 }"
)]
pub struct RawLimits {
    pub line_length: Option<usize>,
    pub entries_per_dir: Option<usize>,
    pub depth: Option<usize>,
}

fn deserialize_secret<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "explicit, implicit or none")]
pub enum RawTlsMode {
    Explicit,
    Implicit,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "passive or active")]
pub enum RawDataMode {
    Passive,
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(expecting = "\"1.2\" or \"1.3\"")]
pub enum RawTlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

/// One job under `jobs:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a job: a mapping with endpoint, direction, local, remote, ..."
)]
pub struct RawJob {
    pub endpoint: Option<String>,
    pub direction: Option<RawDirection>,
    pub local: Option<PathBuf>,
    pub remote: Option<String>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub delete: Option<bool>,
    /// `50%` or `100`: the most files one run may delete.
    pub max_delete: Option<RawMaxDelete>,
    pub verify: Option<RawVerify>,
    pub retry: Option<RawRetry>,
    pub watch: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub settle: Option<Duration>,
    pub after_upload: Option<RawAfterUpload>,
    /// Push: write `x.sha256` beside each uploaded `x`.
    pub checksum_sidecar: Option<bool>,
    /// Run once at start-up a scheduled run missed while the agent was down.
    pub catch_up: Option<bool>,
    /// Delay each scheduled run by a random part of this.
    #[serde(default, with = "humantime_serde")]
    pub jitter: Option<Duration>,
    /// Watch jobs: how often a full scan backs the watcher up.
    #[serde(default, with = "humantime_serde")]
    pub rescan: Option<Duration>,
    /// Pull jobs: `stable` (the default) or `immediate`.
    pub ready: Option<RawReady>,
    /// Pull jobs with `ready: stable`: how long a file must stay unchanged.
    #[serde(default, with = "humantime_serde")]
    pub stable_for: Option<Duration>,
    /// Pull jobs: what to do with the remote file once its local copy is verified and in place.
    pub remote_after_download: Option<RawRemoteAfter>,
    /// Pull jobs: keep replaced and deleted local copies here, with a time suffix.
    pub backup_dir: Option<PathBuf>,
    /// Push jobs: `each` (the default) or `batch`.
    pub publish: Option<RawPublish>,
    /// With `publish: batch`: the file written in the remote root once a batch is in place.
    pub marker: Option<String>,
    /// With `publish: batch`: a SHA-256 manifest of the batch written as the marker.
    pub manifest: Option<String>,
    /// A command (argv list, no shell) run after a run that ended `ok`.
    pub on_success: Option<Vec<String>>,
    /// A command run after a run that did not end `ok`.
    pub on_failure: Option<Vec<String>>,
    /// A hook still running after this is killed.
    #[serde(default, with = "humantime_serde")]
    pub hook_timeout: Option<Duration>,
    /// Two-way jobs: which side wins a file changed on both sides since the last sync.
    pub conflict: Option<RawConflict>,
    /// Push jobs: `temporary` (the default: a temporary name, then a rename) or `direct`.
    pub upload: Option<RawUpload>,
}

/// `upload:` of a push job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "temporary or direct")]
pub enum RawUpload {
    Temporary,
    Direct,
}

/// `ready: stable`, `ready: immediate` or `ready: { marker: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "stable, immediate, sidecar or a mapping { marker: NAME }"
)]
pub enum RawReady {
    Word(RawReadyWord),
    Marker(RawMarker),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawReadyWord {
    Stable,
    Immediate,
    Sidecar,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMarker {
    pub marker: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "push, pull or both")]
pub enum RawDirection {
    Push,
    Pull,
    Both,
}

/// `conflict:` of a two-way job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "snake_case",
    expecting = "newer, local, remote or keep_both"
)]
pub enum RawConflict {
    Newer,
    Local,
    Remote,
    KeepBoth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "size, hash or readback")]
pub enum RawVerify {
    Size,
    Hash,
    Readback,
}

/// `retry: { attempts: 5, initial: 1s, max: 5m }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as { attempts: 5, initial: 1s, max: 5m }"
)]
pub struct RawRetry {
    pub attempts: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub initial: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max: Option<Duration>,
}

/// `max_delete: 100` (files) or `max_delete: "50%"` (of the files known in state).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of files such as 100, or a percentage such as 50%"
)]
pub enum RawMaxDelete {
    Count(u64),
    Text(String),
}

/// `publish: each | batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "each or batch")]
pub enum RawPublish {
    Each,
    Batch,
}

/// `remote_after_download: keep | delete | { move_to: /remote/dir }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "snake_case",
    expecting = "keep, delete or a mapping { move_to: /remote/dir }"
)]
pub enum RawRemoteAfter {
    Keep,
    Delete,
    MoveTo(String),
}

/// `after_upload: keep`, `after_upload: delete` or `after_upload: { move_to: DIR }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "snake_case",
    expecting = "keep, delete or a mapping { move_to: DIR }"
)]
pub enum RawAfterUpload {
    Keep,
    Delete,
    MoveTo(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        match parse_document(text) {
            Ok(Some(node)) => node,
            other => panic!("expected a document, got {other:?}"),
        }
    }

    fn collect<T: DeserializeOwned>(text: &str) -> Collected<T> {
        deserialize_collecting(&parse(text))
    }

    /// Errors as `line:column: message`, the shape the tests compare.
    fn errors_of<T>(collected: &Collected<T>) -> Vec<String> {
        collected
            .errors
            .iter()
            .map(|(m, msg)| format!("{}:{}: {msg}", m.line, m.column))
            .collect()
    }

    #[test]
    fn parse_document_records_one_based_positions_of_keys_and_values() {
        let node = parse("a: 1\nb:\n  c: [x, \"y\"]\n");
        let (key_b, value_b) = node.entry("b").expect("b");
        assert_eq!(key_b.mark, Mark { line: 2, column: 1 });
        let (key_c, value_c) = value_b.entry("c").expect("c");
        assert_eq!(key_c.mark, Mark { line: 3, column: 3 });
        let NodeValue::Sequence(items) = &value_c.value else {
            panic!("not a sequence: {value_c:?}");
        };
        assert_eq!(items[0].mark, Mark { line: 3, column: 7 });
        assert_eq!(
            items[1].mark,
            Mark {
                line: 3,
                column: 10
            }
        );
        assert_eq!(
            items[1].value,
            NodeValue::Scalar {
                text: "y".into(),
                plain: false
            }
        );
    }

    #[test]
    fn parse_document_of_empty_text_is_none() {
        assert_eq!(parse_document(""), Ok(None));
        assert_eq!(parse_document("# only a comment\n"), Ok(None));
    }

    #[test]
    fn parse_document_reports_a_syntax_error_with_its_place() {
        let problem = parse_document("a: 1\nb: [x, y\nc: 2\n").expect_err("syntax error");
        assert_eq!(
            problem.to_string(),
            "3:2: YAML syntax error: illegal placement of ':' indicator"
        );
    }

    #[test]
    fn parse_document_rejects_a_second_document() {
        let problem = parse_document("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert_eq!(
            problem.to_string(),
            "2:1: a job file holds one YAML document; remove the second `---`"
        );
    }

    #[test]
    fn parse_document_expands_aliases() {
        let node = parse("base: &b {x: 1}\ncopy: *b\n");
        assert_eq!(
            node.get("copy")
                .and_then(|c| c.get("x"))
                .and_then(Node::as_scalar),
            Some("1")
        );
    }

    #[test]
    fn parse_document_stops_alias_bombs() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let problem = parse_document(&text).expect_err("bomb");
        assert!(
            problem.message.starts_with("more than 100000 YAML nodes"),
            "{problem}"
        );
    }

    #[test]
    fn scalars_resolve_as_in_the_core_schema() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Sample {
            n: u16,
            b: bool,
            s: String,
            quoted_number: String,
            missing: Option<String>,
            null: Option<String>,
        }
        let collected: Collected<Sample> =
            collect("n: 0x15\nb: TRUE\ns: 1.3\nquoted_number: \"21\"\nnull: ~\n");
        assert_eq!(errors_of(&collected), Vec::<String>::new());
        assert_eq!(
            collected.value,
            Some(Sample {
                n: 21,
                b: true,
                s: "1.3".into(),
                quoted_number: "21".into(),
                missing: None,
                null: None,
            })
        );
    }

    /// Each case: YAML for one endpoint, the errors expected, the keys set aside.
    #[test]
    fn deserialize_collecting_reports_every_bad_entry_with_its_place() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "host: h\nprot: 21\n",
                &[
                    "2:1: unknown field `prot`, expected one of `host`, `port`, `tls`, `allow_insecure`, `user`, `password_env`, `password_file`, `password_credential`, `password`, `ca_file`, `pin_sha256`, `client_cert`, `client_key`, `data_mode`, `max_connections`, `timeout`, `tls_max_version`, `active_ports`, `use_pasv_address`, `limits`",
                ],
                &["prot"],
            ),
            (
                "port: 70000\ntls: sometimes\ntimeout: soon\n",
                &[
                    "1:7: invalid value: integer `70000`, expected u16",
                    "2:6: unknown variant `sometimes`, expected one of `explicit`, `implicit`, `none`",
                    "3:10: invalid value: string \"soon\", expected a duration",
                ],
                &["port", "tls", "timeout"],
            ),
            (
                "port: \"21\"\n",
                &["1:7: invalid type: string \"21\", expected u16"],
                &["port"],
            ),
            (
                "allow_insecure: yes\n",
                &["1:17: invalid type: string \"yes\", expected a boolean"],
                &["allow_insecure"],
            ),
            (
                "host: a\nhost: b\n",
                &["2:1: duplicate field `host`"],
                &["host"],
            ),
            (
                "tls_max_version: 1.4\n",
                &["1:18: unknown variant `1.4`, expected `1.2` or `1.3`"],
                &["tls_max_version"],
            ),
            (
                "host: [a, b]\n",
                &["1:7: invalid type: sequence, expected a string"],
                &["host"],
            ),
        ];
        for (yaml, expected, set_aside) in cases {
            let collected: Collected<RawEndpoint> = collect(yaml);
            assert_eq!(errors_of(&collected), *expected, "for {yaml:?}");
            assert_eq!(collected.set_aside, *set_aside, "for {yaml:?}");
            assert!(collected.value.is_some(), "for {yaml:?}");
        }
    }

    #[test]
    fn deserialize_collecting_places_errors_inside_nested_values() {
        let collected: Collected<RawJob> = collect(
            "retry: { attempts: -1, initial: 1s, maxi: 5m }\n\
             include: [\"*.csv\", 7]\n\
             after_upload: { move_to: [x] }\n\
             verify: { hash: 1 }\n",
        );
        assert_eq!(
            errors_of(&collected),
            [
                "1:20: invalid value: integer `-1`, expected u32",
                "1:37: unknown field `maxi`, expected one of `attempts`, `initial`, `max`",
                "3:26: invalid type: sequence, expected path string",
                "4:17: `hash` takes no value",
            ]
        );
        // `7` in an include list reads as the string "7", as a glob should.
        let job = collected.value.expect("job");
        assert_eq!(
            job.include,
            Some(vec!["*.csv".to_string(), "7".to_string()])
        );
        assert_eq!(
            collected.set_aside,
            ["retry.attempts", "retry.maxi", "after_upload", "verify"]
        );
        assert_eq!(
            job.retry.map(|r| r.initial),
            Some(Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn deserialize_collecting_reads_after_upload_in_its_three_forms() {
        let cases: &[(&str, RawAfterUpload)] = &[
            ("after_upload: keep\n", RawAfterUpload::Keep),
            ("after_upload: delete\n", RawAfterUpload::Delete),
            (
                "after_upload: { move_to: /srv/sent }\n",
                RawAfterUpload::MoveTo("/srv/sent".into()),
            ),
            (
                "after_upload:\n  move_to: sent\n",
                RawAfterUpload::MoveTo("sent".into()),
            ),
        ];
        for (yaml, expected) in cases {
            let collected: Collected<RawJob> = collect(yaml);
            assert_eq!(errors_of(&collected), Vec::<String>::new(), "for {yaml:?}");
            let after = collected.value.and_then(|j| j.after_upload);
            assert_eq!(after.as_ref(), Some(expected), "for {yaml:?}");
        }
    }

    #[test]
    fn deserialize_collecting_explains_a_bare_move_to() {
        let collected: Collected<RawJob> = collect("after_upload: move_to\n");
        assert_eq!(
            errors_of(&collected),
            ["1:15: `move_to` needs a value: write `move_to: ...`"]
        );
    }

    #[test]
    fn deserialize_collecting_gives_up_on_a_node_of_the_wrong_shape() {
        let collected: Collected<RawJob> = collect("just text\n");
        assert!(collected.value.is_none());
        assert_eq!(
            errors_of(&collected),
            [
                "1:1: invalid type: string \"just text\", expected a job: a mapping with endpoint, direction, local, remote, ..."
            ]
        );
    }

    #[test]
    fn raw_endpoint_debug_never_shows_the_password() {
        let collected: Collected<RawEndpoint> = collect("password: hunter2-very-secret\n");
        let debug = format!("{:?}", collected.value);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
