//! HTTP/1.1 pieces shared by `wasm86 serve` and the CLI's streamed disks: reading a message head
//! with a size cap, header lookup, `Range` parsing, percent-decoding, and a small blocking client
//! (plain http only) for the ranged GETs of streamed disks. What a `Content-Range` answer means
//! is `wasm86::block::ranged`, which the browser host shares.
//!
//! Hand-written on `std` (the CLI has no HTTP dependency): both sides only need plain HTTP/1.1
//! with `Content-Length` bodies (and chunked bodies from other servers, on the client side).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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

/// An `http://host[:port]/path` URL, split for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The request target: path and query, starting with '/'.
    pub path: String,
}

impl Url {
    /// The `Host` header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Whether `s` has the shape `scheme://...` (a URL rather than a file name).
pub fn looks_like_url(s: &str) -> bool {
    match s.split_once("://") {
        Some((scheme, _)) => {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// Parse an `http://` URL. Other schemes are errors that say what is supported.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("not a URL (expected http://host[:port]/path)".into());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err("https is not supported by the command-line host (no TLS); \
                        serve the image over plain http, e.g. with `wasm86 serve`"
                .into())
        }
        other => {
            return Err(format!(
                "unsupported URL scheme {other:?}: only http:// images can be streamed"
            ))
        }
    }
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.contains('@') {
        return Err("user names and passwords in URLs are not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("unclosed '[' in the host".into());
        };
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("unexpected {after:?} after the host")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(format!("invalid host name {host:?}"));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("invalid port {p:?}")),
        },
    };
    // The fragment is not sent; spaces and other bytes outside the ASCII printables are
    // percent-encoded, control characters refused.
    let tail = tail.split('#').next().unwrap_or("");
    let mut path = String::new();
    if !tail.starts_with('/') {
        path.push('/');
    }
    for b in tail.bytes() {
        match b {
            0..=0x1f | 0x7f => return Err("control characters in the URL".into()),
            b' ' | 0x80..=0xff => path.push_str(&format!("%{b:02X}")),
            _ => path.push(char::from(b)),
        }
    }
    Ok(Url {
        host: host.to_string(),
        port,
        path,
    })
}

/// A response's status line and headers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The reason phrase ("Not Found").
    pub reason: String,
    pub head: Head,
}

impl Response {
    /// "HTTP 404 Not Found", for messages.
    pub fn describe(&self) -> String {
        format!("HTTP {} {}", self.status, self.reason)
            .trim()
            .to_string()
    }
}

/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a read or write on the connection may stall before the request fails.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request failed: `stale` when a reused keep-alive connection failed before any response
/// byte (the server closed it meanwhile): the request is then sent again on a new connection.
struct Failure {
    message: String,
    stale: bool,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            stale: false,
        }
    }
}

/// A blocking HTTP/1.1 client for one server, keeping one connection alive between requests.
pub struct Client {
    url: Url,
    conn: Option<BufReader<TcpStream>>,
    /// Requests sent (counting a resend on a fresh connection once).
    pub requests: u64,
}

impl Client {
    pub fn new(url: Url) -> Client {
        Client {
            url,
            conn: None,
            requests: 0,
        }
    }

    /// GET the URL, of bytes `start..end` when `range` is given. Bodies of successful (2xx)
    /// answers are read, at most `max_body` bytes (a longer one is an error); the body of any
    /// other answer is not read (the connection is closed instead).
    pub fn get(
        &mut self,
        range: Option<(u64, u64)>,
        max_body: u64,
    ) -> Result<(Response, Vec<u8>), String> {
        let reused = self.conn.is_some();
        match self.try_get(range, max_body) {
            Err(f) if f.stale && reused => {
                self.conn = None;
                self.try_get(range, max_body).map_err(|f| f.message)
            }
            r => r.map_err(|f| f.message),
        }
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, Failure> {
        let Url { host, port, .. } = &self.url;
        let addrs = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| Failure::new(format!("cannot resolve {host}: {e}")))?;
        let mut last = Failure::new(format!("{host} has no address"));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = s.set_nodelay(true);
                    return Ok(BufReader::new(s));
                }
                Err(e) => last = Failure::new(format!("cannot connect to {addr}: {e}")),
            }
        }
        Err(last)
    }

    fn try_get(
        &mut self,
        range: Option<(u64, u64)>,
        max_body: u64,
    ) -> Result<(Response, Vec<u8>), Failure> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wasm86\r\nAccept-Encoding: identity\r\n",
            self.url.path,
            self.url.authority()
        );
        if let Some((start, end)) = range {
            if end <= start {
                return Err(Failure::new(format!("empty range {start}..{end}")));
            }
            req.push_str(&format!("Range: bytes={start}-{}\r\n", end - 1));
        }
        req.push_str("\r\n");
        self.requests += 1;
        let stale = |e: String| Failure {
            message: e,
            stale: true,
        };
        conn.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| stale(format!("sending the request: {e}")))?;
        let response = loop {
            let head = match read_head(&mut conn) {
                Ok(h) => h,
                Err(e @ (HeadError::Closed | HeadError::Io(_))) => {
                    return Err(stale(format!("no response: {e}")))
                }
                Err(e) => return Err(Failure::new(e.to_string())),
            };
            let r = parse_status(head)?;
            // Interim answers (100 Continue) precede the real one.
            if !(100..200).contains(&r.status) {
                break r;
            }
        };
        if !(200..300).contains(&response.status) {
            return Ok((response, Vec::new()));
        }
        let too_large = |n: u64| {
            Failure::new(format!(
                "the response is too large ({n} bytes, at most {max_body} expected)"
            ))
        };
        let head = &response.head;
        let mut body = Vec::new();
        let framed = if response.status == 204 {
            true
        } else if head.has_token("Transfer-Encoding", "chunked") {
            read_chunked(&mut conn, max_body, &mut body)?;
            true
        } else if let Some(cl) = head.get("Content-Length") {
            let n = cl
                .parse::<u64>()
                .map_err(|_| Failure::new(format!("invalid Content-Length {cl:?}")))?;
            if n > max_body {
                return Err(too_large(n));
            }
            let got = conn
                .by_ref()
                .take(n)
                .read_to_end(&mut body)
                .map_err(|e| Failure::new(format!("reading the body: {e}")))?;
            if got as u64 != n {
                return Err(Failure::new(format!(
                    "the connection closed after {got} of {n} bytes"
                )));
            }
            true
        } else {
            // Delimited by the end of the connection.
            let got = conn
                .by_ref()
                .take(max_body.saturating_add(1))
                .read_to_end(&mut body)
                .map_err(|e| Failure::new(format!("reading the body: {e}")))?;
            if got as u64 > max_body {
                return Err(too_large(got as u64));
            }
            false
        };
        let keep = framed
            && response.head.start.starts_with("HTTP/1.1")
            && !response.head.has_token("Connection", "close");
        if keep {
            self.conn = Some(conn);
        }
        Ok((response, body))
    }
}

/// The status line of a response head.
fn parse_status(head: Head) -> Result<Response, Failure> {
    let bad = || Failure::new(format!("not an HTTP response: {:?}", head.start));
    let mut parts = head.start.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bad());
    }
    let status = code.parse::<u16>().map_err(|_| bad())?;
    let reason = parts.next().unwrap_or("").trim().to_string();
    Ok(Response {
        status,
        reason,
        head,
    })
}

/// Read a chunked body (RFC 9112 §7.1) into `out`, at most `max` bytes.
fn read_chunked(r: &mut impl BufRead, max: u64, out: &mut Vec<u8>) -> Result<(), Failure> {
    let fail = |e: HeadError| Failure::new(format!("reading a chunked body: {e}"));
    loop {
        let mut budget = 1024;
        let line = read_line(r, &mut budget)
            .map_err(fail)?
            .ok_or_else(|| fail(HeadError::Malformed("the connection closed")))?;
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| fail(HeadError::Malformed("a bad chunk size")))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            let mut budget = MAX_HEAD;
            while let Some(l) = read_line(r, &mut budget).map_err(fail)? {
                if l.is_empty() {
                    return Ok(());
                }
            }
            return Err(fail(HeadError::Malformed("the connection closed")));
        }
        if (out.len() as u64).saturating_add(size) > max {
            return Err(Failure::new(format!(
                "the response is too large (more than {max} bytes)"
            )));
        }
        let got = r
            .by_ref()
            .take(size)
            .read_to_end(out)
            .map_err(|e| Failure::new(format!("reading the body: {e}")))?;
        let mut crlf = [0u8; 2];
        if got as u64 != size || r.read_exact(&mut crlf).is_err() || &crlf != b"\r\n" {
            return Err(fail(HeadError::Malformed("a truncated chunk")));
        }
    }
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

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/images/disk.img?v=1#frag").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/images/disk.img?v=1");
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = parse_url("HTTP://[::1]/a b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 80, "/a%20b")
        );
        assert_eq!(u.authority(), "[::1]");
        assert_eq!(parse_url("http://h?x").unwrap().path, "/?x");
        assert!(parse_url("https://h/x")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_url("ftp://h/x").unwrap_err().contains("scheme"));
        for bad in [
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://[::1/",
            "http://h/\x01",
            "http://h h/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(looks_like_url("http://x") && looks_like_url("s3+x://y"));
        assert!(!looks_like_url("disk.img") && !looks_like_url("./a://b"));
    }

    #[test]
    fn chunked_bodies() {
        let mut out = Vec::new();
        let mut r = io::BufReader::new(&b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n"[..]);
        assert!(read_chunked(&mut r, 100, &mut out).is_ok());
        assert_eq!(out, b"Wikipedia");
        let mut r = io::BufReader::new(&b"ffffffffff\r\n"[..]);
        assert!(read_chunked(&mut r, 100, &mut Vec::new()).is_err());
        let mut r = io::BufReader::new(&b"4\r\nWi"[..]);
        assert!(read_chunked(&mut r, 100, &mut Vec::new()).is_err());
    }
}
