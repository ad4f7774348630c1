//! The elements of a top-level JSON array, one at a time, as byte slices: a report of any size is read
//! in chunks, while each element is parsed from memory (`serde_json::from_slice`, several times faster
//! than parsing through `io::Read`). Memory holds one element and one chunk.
//!
//! The splitter only finds where elements end (strings, escapes and nesting are followed); serde checks
//! each element. Positions are kept so that errors name the line and column in the file.

use std::io::BufRead;

/// Where an element starts in the file (1-based line and byte column, 0-based byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
    pub offset: u64,
}

/// Why the file is not a JSON array of elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    Io(String),
    /// Not an array: the first non-blank byte, and where it is.
    NotAnArray(Position),
    /// The file ends inside an element or before the closing `]`.
    Truncated(Position),
    /// A byte that cannot be where it is (e.g. `]` inside an object, two commas).
    Unexpected(Position, u8),
    /// Something follows the closing `]`.
    TrailingData(Position),
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitError::Io(e) => write!(f, "cannot read it: {e}"),
            SplitError::NotAnArray(p) => write!(f, "expected a JSON array at line {}, column {}", p.line, p.column),
            SplitError::Truncated(p) => {
                write!(
                    f,
                    "the file is truncated (it ends at line {}, column {} before the array closes)",
                    p.line, p.column
                )
            }
            SplitError::Unexpected(p, b) => {
                write!(f, "unexpected `{}` at line {}, column {}", char::from(*b).escape_default(), p.line, p.column)
            }
            SplitError::TrailingData(p) => {
                write!(f, "unexpected data after the array at line {}, column {}", p.line, p.column)
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

pub struct JsonArrayElements<R> {
    input: R,
    element: Vec<u8>,
    state: State,
    line: u64,
    column: u64,
    offset: u64,
}

impl<R: BufRead> JsonArrayElements<R> {
    pub fn new(input: R) -> Self {
        Self { input, element: Vec::new(), state: State::Start, line: 1, column: 1, offset: 0 }
    }

    fn position(&self) -> Position {
        Position { line: self.line, column: self.column, offset: self.offset }
    }

    fn advance(&mut self, bytes: &[u8]) {
        advance(&mut self.line, &mut self.column, &mut self.offset, bytes);
    }

    /// Skips blanks; returns the next byte without consuming it, or `None` at the end of the input.
    fn peek_non_blank(&mut self) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = self.input.fill_buf().map_err(|e| SplitError::Io(e.to_string()))?;
            if buf.is_empty() {
                return Ok(None);
            }
            let blanks = buf.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
            let n = blanks.min(buf.len());
            let next = buf.get(blanks).copied();
            advance(&mut self.line, &mut self.column, &mut self.offset, &buf[..n]);
            self.input.consume(n);
            if next.is_some() {
                return Ok(next);
            }
        }
    }

    fn consume_one(&mut self, b: u8) {
        self.input.consume(1);
        self.advance(&[b]);
    }

    /// The next element and where it starts, or `None` after the closing `]`.
    pub fn next_element(&mut self) -> Result<Option<(&[u8], Position)>, SplitError> {
        loop {
            match self.state {
                State::Done => {
                    return match self.peek_non_blank()? {
                        None => Ok(None),
                        Some(_) => Err(SplitError::TrailingData(self.position())),
                    };
                }
                State::Start => match self.peek_non_blank()? {
                    Some(b'[') => {
                        self.consume_one(b'[');
                        self.state = State::BeforeElement { first: true };
                    }
                    Some(_) => return Err(SplitError::NotAnArray(self.position())),
                    None => return Err(SplitError::Truncated(self.position())),
                },
                State::AfterElement => match self.peek_non_blank()? {
                    Some(b',') => {
                        self.consume_one(b',');
                        self.state = State::BeforeElement { first: false };
                    }
                    Some(b']') => {
                        self.consume_one(b']');
                        self.state = State::Done;
                    }
                    Some(b) => return Err(SplitError::Unexpected(self.position(), b)),
                    None => return Err(SplitError::Truncated(self.position())),
                },
                State::BeforeElement { first } => match self.peek_non_blank()? {
                    Some(b']') if first => {
                        self.consume_one(b']');
                        self.state = State::Done;
                    }
                    Some(b @ (b']' | b',')) => return Err(SplitError::Unexpected(self.position(), b)),
                    Some(_) => {
                        let start = self.position();
                        self.read_element()?;
                        self.state = State::AfterElement;
                        return Ok(Some((&self.element, start)));
                    }
                    None => return Err(SplitError::Truncated(self.position())),
                },
            }
        }
    }

    /// Reads one element (an object, an array, a string or a scalar) into `self.element`. Inside
    /// strings, which are most of a report, it jumps from quote to backslash with `memchr`.
    fn read_element(&mut self) -> Result<(), SplitError> {
        self.element.clear();
        let mut depth: u32 = 0;
        let mut in_string = false;
        // A backslash ended the previous chunk: the first byte of this one is escaped.
        let mut escaped = false;
        loop {
            let buf = self.input.fill_buf().map_err(|e| SplitError::Io(e.to_string()))?;
            if buf.is_empty() {
                // The input ends inside an element: the array never closes.
                return Err(SplitError::Truncated(self.position()));
            }
            let mut i = 0;
            let mut end = None;
            while i < buf.len() {
                if escaped {
                    escaped = false;
                    i += 1;
                    continue;
                }
                if in_string {
                    match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                        None => i = buf.len(),
                        Some(j) if buf[i + j] == b'\\' => {
                            escaped = true;
                            i += j + 1;
                        }
                        Some(j) => {
                            in_string = false;
                            i += j + 1;
                            if depth == 0 {
                                end = Some(i);
                                break;
                            }
                        }
                    }
                    continue;
                }
                match buf[i] {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    // The end of a scalar element (or a stray `]`, which the caller reports).
                    b',' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let take = end.unwrap_or(buf.len());
            self.element.extend_from_slice(&buf[..take]);
            advance(&mut self.line, &mut self.column, &mut self.offset, &buf[..take]);
            self.input.consume(take);
            if end.is_some() {
                return Ok(());
            }
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

/// A serde error inside an element, placed in the file.
pub fn place(e: &serde_json::Error, start: Position) -> (u64, u64) {
    let line = start.line + e.line().saturating_sub(1) as u64;
    let column = if e.line() <= 1 { start.column + e.column().saturating_sub(1) as u64 } else { e.column() as u64 };
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str) -> Result<Vec<(String, u64, u64)>, SplitError> {
        // A tiny buffer, so that elements straddle chunks.
        let mut it = JsonArrayElements::new(std::io::BufReader::with_capacity(3, input.as_bytes()));
        let mut out = Vec::new();
        while let Some((bytes, at)) = it.next_element()? {
            out.push((String::from_utf8_lossy(bytes).into_owned(), at.line, at.column));
        }
        Ok(out)
    }

    #[test]
    fn elements_come_out_whole_with_their_positions() {
        let got = all("[\n {\"a\": \"x,]}\\\"\", \"b\": [1, {\"c\": 2}]},\n 3 , \"s\" ,[] ]\n").expect("splits");
        let texts: Vec<&str> = got.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(texts, vec!["{\"a\": \"x,]}\\\"\", \"b\": [1, {\"c\": 2}]}", "3", "\"s\"", "[]"]);
        assert_eq!((got[0].1, got[0].2), (2, 2));
        assert_eq!((got[1].1, got[1].2), (3, 2));
        assert_eq!(all("[]").expect("empty"), vec![]);
        assert_eq!(all("  [ ]  ").expect("empty"), vec![]);
    }

    #[test]
    fn broken_arrays_are_errors_with_positions() {
        assert!(matches!(all("{\"a\": 1}"), Err(SplitError::NotAnArray(Position { line: 1, column: 1, .. }))));
        assert!(matches!(all("[{\"a\": 1}"), Err(SplitError::Truncated(_))));
        assert!(matches!(all("[{\"a\": \"unterminated"), Err(SplitError::Truncated(_))));
        assert!(matches!(all("[1,,2]"), Err(SplitError::Unexpected(_, b','))));
        assert!(matches!(all("[1] x"), Err(SplitError::TrailingData(_))));
        assert!(matches!(all(""), Err(SplitError::Truncated(_))));
        assert!(matches!(all("[1,]"), Err(SplitError::Unexpected(_, b']'))));
    }
}
