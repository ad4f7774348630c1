//! The elements of a top-level JSON array, one at a time: a report of any size is read in chunks into a
//! text buffer (checked as UTF-8 once, when it is read) and each element is deserialised straight from
//! that buffer, borrowing its strings, by serde_json's fastest path (`&str` input). Nothing scans the
//! bytes before serde does. An element that is not whole in the buffer yet stops serde at the buffer's
//! end; more is read and it is parsed again (rare: the buffer is kept well ahead of the parser). Memory
//! holds one chunk and the largest element.
//!
//! Positions are kept so that errors name the line and column in the file.

use std::borrow::Cow;
use std::io::BufRead;

use serde::de::DeserializeOwned;

/// Where an element starts in the file (1-based line and byte column, 0-based byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
    pub offset: u64,
}

/// Why the file is not a JSON array of elements.
#[derive(Debug)]
pub enum ArrayError {
    Io(String),
    /// Not an array: the first non-blank byte is not `[`.
    NotAnArray(Position),
    /// The file ends inside an element or before the closing `]`.
    Truncated(Position),
    /// A byte that cannot be where it is (e.g. two commas, `]` after a comma).
    Unexpected(Position, char),
    /// Something follows the closing `]`.
    TrailingData(Position),
    /// The file is not UTF-8 (JSON must be) from this offset on.
    NotUtf8 {
        offset: u64,
    },
    /// An element that is not valid JSON, or not of the expected shape; `at` is where the element
    /// starts ([`place`] puts the error in the file).
    Element {
        error: serde_json::Error,
        at: Position,
    },
}

impl std::fmt::Display for ArrayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArrayError::Io(e) => write!(f, "cannot read it: {e}"),
            ArrayError::NotAnArray(p) => write!(f, "expected a JSON array at line {}, column {}", p.line, p.column),
            ArrayError::Truncated(p) => {
                write!(
                    f,
                    "the file is truncated (it ends at line {}, column {} before the array closes)",
                    p.line, p.column
                )
            }
            ArrayError::Unexpected(p, c) => {
                write!(f, "unexpected `{}` at line {}, column {}", c.escape_default(), p.line, p.column)
            }
            ArrayError::TrailingData(p) => {
                write!(f, "unexpected data after the array at line {}, column {}", p.line, p.column)
            }
            ArrayError::NotUtf8 { offset } => write!(f, "the file is not UTF-8 text (at byte {offset})"),
            ArrayError::Element { error, at } => {
                let (line, column) = place(error, *at);
                write!(f, "at line {line}, column {column}: {error}")
            }
        }
    }
}

enum State {
    /// Before the opening `[`.
    Start,
    /// After `[` or after an element's `,`: an element or (after `[` only) `]` comes next.
    BeforeElement { first: bool },
    /// After an element: `,` or `]`.
    AfterElement,
    /// After the closing `]`: only blanks.
    Done,
}

/// How much text the buffer holds ahead of the parser before an element is parsed; an element longer
/// than this is parsed again once the rest of it has been read.
const READ_AHEAD: usize = 256 * 1024;

pub struct JsonArrayReader<R> {
    input: R,
    /// Text read and not yet consumed is `text[start..]`.
    text: String,
    start: usize,
    /// The bytes of a character cut by the end of the last chunk read.
    pending: Vec<u8>,
    eof: bool,
    read_ahead: usize,
    state: State,
    /// Where `text[start]` is in the file.
    line: u64,
    column: u64,
    offset: u64,
}

impl<R: BufRead> JsonArrayReader<R> {
    pub fn new(input: R) -> Self {
        Self::with_read_ahead(input, READ_AHEAD)
    }

    /// A reader that keeps `read_ahead` bytes ahead of the parser (tests use tiny ones).
    pub fn with_read_ahead(input: R, read_ahead: usize) -> Self {
        Self {
            input,
            text: String::new(),
            start: 0,
            pending: Vec::new(),
            eof: false,
            read_ahead: read_ahead.max(1),
            state: State::Start,
            line: 1,
            column: 1,
            offset: 0,
        }
    }

    fn position(&self) -> Position {
        Position { line: self.line, column: self.column, offset: self.offset }
    }

    fn held(&self) -> usize {
        self.text.len() - self.start
    }

    /// Reads until the buffer holds `want` bytes past `start` or the input ends. Consumed text is
    /// dropped first once it is at least half the buffer, so the text moved is at most what was
    /// consumed, and the buffer stays about twice the read-ahead.
    fn fill(&mut self, want: usize) -> Result<(), ArrayError> {
        if self.start > 0 && self.start >= self.text.len() / 2 {
            self.text.drain(..self.start);
            self.start = 0;
        }
        while !self.eof && self.held() < want {
            // Where the text read next starts in the file (for errors).
            let read_to = self.offset + self.held() as u64;
            let chunk = self.input.fill_buf().map_err(|e| ArrayError::Io(e.to_string()))?;
            if chunk.is_empty() {
                self.eof = true;
                if !self.pending.is_empty() {
                    return Err(ArrayError::NotUtf8 { offset: read_to });
                }
                break;
            }
            let n = chunk.len();
            if self.pending.is_empty() {
                match std::str::from_utf8(chunk) {
                    Ok(t) => self.text.push_str(t),
                    Err(e) => {
                        let good = e.valid_up_to();
                        if e.error_len().is_some() {
                            return Err(ArrayError::NotUtf8 { offset: read_to + good as u64 });
                        }
                        // A character cut by the chunk's end: its first bytes wait for the rest.
                        self.text.push_str(std::str::from_utf8(&chunk[..good]).unwrap_or_default());
                        self.pending.extend_from_slice(&chunk[good..]);
                    }
                }
            } else {
                // Complete the cut character byte by byte (at most three more), then go on normally.
                self.pending.push(chunk[0]);
                self.input.consume(1);
                match std::str::from_utf8(&self.pending) {
                    Ok(c) => {
                        self.text.push_str(c);
                        self.pending.clear();
                    }
                    Err(e) if e.error_len().is_some() || self.pending.len() >= 4 => {
                        return Err(ArrayError::NotUtf8 { offset: read_to });
                    }
                    Err(_) => {}
                }
                continue;
            }
            self.input.consume(n);
        }
        Ok(())
    }

    /// Moves past `n` bytes of the held text.
    fn consume(&mut self, n: usize) {
        let bytes = &self.text.as_bytes()[self.start..self.start + n];
        advance(&mut self.line, &mut self.column, &mut self.offset, bytes);
        self.start += n;
    }

    /// Skips blanks; returns the next character without consuming it, or `None` at the end of the input.
    fn peek_non_blank(&mut self) -> Result<Option<char>, ArrayError> {
        loop {
            let rest = &self.text[self.start..];
            let blanks = rest.bytes().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
            let next = rest[blanks..].chars().next();
            self.consume(blanks);
            if next.is_some() {
                return Ok(next);
            }
            if self.eof {
                return Ok(None);
            }
            self.fill(self.read_ahead)?;
        }
    }

    /// The next element deserialised as `T` and where it starts, or `None` after the closing `]`.
    ///
    /// `T` is an owned value; its `Deserialize` may borrow from the text while it runs (as a parser's
    /// input structs do) and convert to owned data before it returns.
    pub fn next_element<T: DeserializeOwned>(&mut self) -> Result<Option<(T, Position)>, ArrayError> {
        loop {
            match self.state {
                State::Done => {
                    return match self.peek_non_blank()? {
                        None => Ok(None),
                        Some(_) => Err(ArrayError::TrailingData(self.position())),
                    };
                }
                State::Start => match self.peek_non_blank()? {
                    Some('[') => {
                        self.consume(1);
                        self.state = State::BeforeElement { first: true };
                    }
                    Some(_) => return Err(ArrayError::NotAnArray(self.position())),
                    None => return Err(ArrayError::Truncated(self.position())),
                },
                State::AfterElement => match self.peek_non_blank()? {
                    Some(',') => {
                        self.consume(1);
                        self.state = State::BeforeElement { first: false };
                    }
                    Some(']') => {
                        self.consume(1);
                        self.state = State::Done;
                    }
                    Some(c) => return Err(ArrayError::Unexpected(self.position(), c)),
                    None => return Err(ArrayError::Truncated(self.position())),
                },
                State::BeforeElement { first } => match self.peek_non_blank()? {
                    Some(']') if first => {
                        self.consume(1);
                        self.state = State::Done;
                    }
                    Some(c @ (']' | ',')) => return Err(ArrayError::Unexpected(self.position(), c)),
                    Some(_) => {
                        let at = self.position();
                        let value = self.parse_element(at)?;
                        self.state = State::AfterElement;
                        return Ok(Some((value, at)));
                    }
                    None => return Err(ArrayError::Truncated(self.position())),
                },
            }
        }
    }

    /// Parses the element at `start`, reading more while serde runs out of text before it ends.
    fn parse_element<T: DeserializeOwned>(&mut self, at: Position) -> Result<T, ArrayError> {
        // Topped up when half the read-ahead is left, so most elements are whole in the buffer.
        if self.held() < self.read_ahead / 2 && !self.eof {
            self.fill(self.read_ahead)?;
        }
        loop {
            let rest = &self.text[self.start..];
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<T>();
            let result = stream.next();
            let used = stream.byte_offset();
            match result {
                // A scalar that ends where the text does may go on in the next chunk.
                Some(Ok(_)) if used == rest.len() && !self.eof => {}
                Some(Ok(value)) => {
                    self.consume(used);
                    return Ok(value);
                }
                Some(Err(e)) if e.is_eof() && !self.eof => {}
                Some(Err(e)) if e.is_eof() => {
                    let mut end = at;
                    advance(&mut end.line, &mut end.column, &mut end.offset, rest.as_bytes());
                    return Err(ArrayError::Truncated(end));
                }
                Some(Err(error)) => return Err(ArrayError::Element { error, at }),
                None => return Err(ArrayError::Truncated(at)),
            }
            // More text is needed: at least twice as much as was held.
            self.fill(self.held().saturating_mul(2).max(self.read_ahead))?;
        }
    }
}

/// Moves a position over `bytes`: lines by newlines, columns in bytes from the line's start (as
/// serde_json counts them).
fn advance(line: &mut u64, column: &mut u64, offset: &mut u64, bytes: &[u8]) {
    match memchr::memrchr(b'\n', bytes) {
        Some(last) => {
            *line += memchr::memchr_iter(b'\n', bytes).count() as u64;
            *column = (bytes.len() - last) as u64;
        }
        None => *column += bytes.len() as u64,
    }
    *offset += bytes.len() as u64;
}

/// A JSON string borrowed from the element's bytes when it holds no escape (copied only when it does):
/// what a parser reads and then drops costs no allocation. Unlike `Cow<str>`, it borrows inside an
/// `Option` or a `Vec` too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A serde error inside an element, placed in the file.
pub fn place(e: &serde_json::Error, start: Position) -> (u64, u64) {
    let line = start.line + e.line().saturating_sub(1) as u64;
    let column = if e.line() <= 1 { start.column + e.column().saturating_sub(1) as u64 } else { e.column() as u64 };
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn all_with(input: &[u8], read_ahead: usize) -> Result<Vec<(Value, u64, u64)>, ArrayError> {
        // A tiny reader buffer and read-ahead, so that elements and characters straddle chunks.
        let mut it = JsonArrayReader::with_read_ahead(std::io::BufReader::with_capacity(3, input), read_ahead);
        let mut out = Vec::new();
        while let Some((v, at)) = it.next_element::<Value>()? {
            out.push((v, at.line, at.column));
        }
        Ok(out)
    }

    fn all(input: &str) -> Result<Vec<(Value, u64, u64)>, ArrayError> {
        let small = all_with(input.as_bytes(), 2);
        let large = all_with(input.as_bytes(), READ_AHEAD);
        if let (Ok(a), Ok(b)) = (&small, &large) {
            assert_eq!(a, b, "the read-ahead changes nothing");
        }
        small
    }

    #[test]
    fn elements_come_out_whole_with_their_positions() {
        let got =
            all("[\n {\"a\": \"x,]}\\\"é\", \"b\": [1, {\"c\": 2}]},\n 3 , \"s\" ,[], 12345 ]\n").expect("splits");
        let values: Vec<&Value> = got.iter().map(|(v, _, _)| v).collect();
        assert_eq!(
            values,
            vec![&json!({"a": "x,]}\"é", "b": [1, {"c": 2}]}), &json!(3), &json!("s"), &json!([]), &json!(12345)]
        );
        assert_eq!((got[0].1, got[0].2), (2, 2));
        assert_eq!((got[1].1, got[1].2), (3, 2));
        assert_eq!(all("[]").expect("empty"), vec![]);
        assert_eq!(all("  [ ]  ").expect("empty"), vec![]);
    }

    #[test]
    fn broken_arrays_are_errors_with_positions() {
        assert!(matches!(all("{\"a\": 1}"), Err(ArrayError::NotAnArray(Position { line: 1, column: 1, .. }))));
        assert!(matches!(all("[{\"a\": 1}"), Err(ArrayError::Truncated(_))));
        assert!(matches!(all("[{\"a\": \"unterminated"), Err(ArrayError::Truncated(_))));
        assert!(matches!(all("[1,,2]"), Err(ArrayError::Unexpected(_, ','))));
        assert!(matches!(all("[1] x"), Err(ArrayError::TrailingData(_))));
        assert!(matches!(all(""), Err(ArrayError::Truncated(_))));
        assert!(matches!(all("[1,]"), Err(ArrayError::Unexpected(_, ']'))));
        assert!(matches!(all("[1 2]"), Err(ArrayError::Unexpected(_, '2'))));
        match all("[{\"a\": 1},\n  {\"a\": tru}]") {
            Err(e @ ArrayError::Element { .. }) => {
                assert!(e.to_string().starts_with("at line 2, column"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(all_with(b"[\"\xff\"]", 2), Err(ArrayError::NotUtf8 { offset: 2 })));
        assert!(matches!(all_with(b"[\"\xc3", 2), Err(ArrayError::NotUtf8 { .. })));
        assert!(matches!(all_with(b"[\"\xc3(\"]", 2), Err(ArrayError::NotUtf8 { .. })));
    }

    #[test]
    fn an_element_larger_than_the_read_ahead_is_read_whole() {
        let big = "x".repeat(10_000);
        let input = format!("[{{\"a\": \"{big}\"}}, 7]");
        let got = all_with(input.as_bytes(), 16).expect("reads");
        assert_eq!(got[0].0, json!({"a": big}));
        assert_eq!(got[1].0, json!(7));
    }
}
