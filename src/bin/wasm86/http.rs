//! HTTP/1.1 pieces shared by `wasm86 serve` and the CLI's streamed disks: reading a message head
//! with a size cap, header lookup, `Range` and `Content-Range` parsing, percent-decoding.
//!
//! Hand-written on `std` (the CLI has no HTTP dependency): both sides only need plain HTTP/1.1
//! with `Content-Length` bodies (and chunked bodies from other servers, on the client side).

use std::io::{self, BufRead, Read};

/// Longest message head (start line and headers) accepted: far more than any browser sends,
/// small enough that a client cannot make the server buffer without bound.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// A request or status line with its headers.
#[derive(Debug, Clone)]
pub struct Head {
    /// The request line ("GET / HTTP/1.1") or status line ("HTTP/1.1 200 OK").
    pub start: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any `name` header lists `token` in its comma-separated value (case-insensitive),
    /// as `Connection: keep-alive, Upgrade` lists `keep-alive`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why a head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending anything (a normal end of keep-alive).
    Closed,
    /// The head exceeds [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines.
    TooLarge,
    /// Not an HTTP head.
    Malformed(&'static str),
    /// The connection failed or timed out.
    Io(io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Closed => write!(f, "the connection was closed"),
            HeadError::TooLarge => write!(f, "the message head is too large"),
            HeadError::Malformed(what) => write!(f, "malformed message head: {what}"),
            HeadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Read one line (up to and without its LF and a CR before it), spending at most `*budget`
/// bytes. `Ok(None)` at end of input before any byte.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(HeadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n > *budget {
            HeadError::TooLarge
        } else {
            HeadError::Malformed("the connection closed in the middle of the head")
        });
    }
    *budget -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Read a message head: the start line, header lines, and the empty line that ends them.
/// Empty lines before the start line are skipped (RFC 9112 §2.2: a client may send a CRLF
/// after a POST body). The whole head may take at most [`MAX_HEAD`] bytes.
pub fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut budget = MAX_HEAD;
    let start = loop {
        match read_line(r, &mut budget)? {
            None => return Err(HeadError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    if start.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeadError::Malformed("control characters in the start line"));
    }
    let start = String::from_utf8_lossy(&start).into_owned();
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(r, &mut budget)? else {
            return Err(HeadError::Malformed(
                "the connection closed in the middle of the head",
            ));
        };
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Obsolete line folding; RFC 9112 §5.2 lets a server reject it.
            return Err(HeadError::Malformed("folded header line"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HeadError::Malformed("a header line without a colon"));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
            return Err(HeadError::Malformed("an invalid header name"));
        }
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Head { start, headers })
}

/// A `tchar` of RFC 9110 §5.6.2 (header names, methods).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty token (a method, say).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// A decimal number of digits only; values beyond `u64` saturate (a range starting there is
/// past any file's end, which is what the client meant).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: send the whole file with 200 (also for syntactically invalid ranges and
    /// for several ranges at once, which RFC 9110 §14.2 lets a server ignore).
    Whole,
    /// Send bytes `start..end` with 206.
    Part { start: u64, end: u64 },
    /// The range starts beyond the end of the file: 416.
    Unsatisfiable,
}

/// Interpret the value of a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`) for a file of
/// `len` bytes.
pub fn parse_range(value: &str, len: u64) -> RangeAnswer {
    let value = value.trim();
    let Some((unit, set)) = value.split_once('=') else {
        return RangeAnswer::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last n bytes.
        return match digits(last) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part {
                start: len - n.min(len),
                end: len,
            },
        };
    }
    let Some(start) = digits(first) else {
        return RangeAnswer::Whole;
    };
    let end = if last.is_empty() {
        len
    } else {
        match digits(last) {
            Some(l) if l >= start => l.saturating_add(1).min(len),
            _ => return RangeAnswer::Whole,
        }
    };
    if start >= len {
        RangeAnswer::Unsatisfiable
    } else {
        RangeAnswer::Part { start, end }
    }
}

/// Decode `%XX` escapes; None for a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, HeadError> {
        read_head(&mut io::BufReader::new(text.as_bytes()))
    }

    #[test]
    fn heads_are_parsed_and_capped() {
        let h = head("\r\nGET /a HTTP/1.1\r\nHost: x\r\nRange:  bytes=0-1 \r\n\r\n").unwrap();
        assert_eq!(h.start, "GET /a HTTP/1.1");
        assert_eq!(h.get("range"), Some("bytes=0-1"));
        assert!(matches!(head(""), Err(HeadError::Closed)));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nNo colon\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(head(&huge), Err(HeadError::TooLarge)));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Err(HeadError::TooLarge)));
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part { start: 0, end: 10 });
        assert_eq!(
            parse_range("bytes=90-", 100),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(parse_range("bytes=-1000", 100), Part { start: 0, end: 100 });
        assert_eq!(
            parse_range("bytes=50-5000", 100),
            Part {
                start: 50,
                end: 100
            }
        );
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 100),
            Unsatisfiable
        );
        for bogus in [
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=1-2,4-5",
            "items=0-1",
            "bytes=+1-2",
            "bytes 0-1",
            "",
        ] {
            assert_eq!(parse_range(bogus, 100), Whole, "{bogus}");
        }
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("a%2e%2E/%41").unwrap(), b"a../A");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
