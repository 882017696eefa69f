//! What the HTTP answers for a streamed image mean: the probe that opens it, the answer to a
//! chunk request, `Content-Range`, the retry schedule and the messages hosts show. Plain Rust
//! without I/O, shared by the hosts that do the fetching (the browser's `web::http` and the
//! CLI's HTTP client).

/// `Content-Range: bytes START-END/TOTAL` of a 206 response (END inclusive; TOTAL may be `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    pub total: Option<u64>,
}

/// Parse a `Content-Range` header value; None if it is not a satisfied byte range.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let start = digits(a.trim())?;
    let last = digits(b.trim())?;
    let total = match total.trim() {
        "*" => None,
        t => Some(digits(t)?),
    };
    let end = last.checked_add(1)?;
    if end <= start || total.is_some_and(|t| end > t) {
        return None;
    }
    Some(ContentRange { start, end, total })
}

/// A decimal number of ASCII digits only (no sign, no spaces); None if it does not fit in u64.
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The reason phrase of common HTTP statuses (HTTP/2 responses carry none of their own).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// "HTTP 404 Not Found", with the server's own reason phrase when it sent one.
pub fn status_line(status: u16, status_text: &str) -> String {
    let text = if status_text.trim().is_empty() {
        reason_phrase(status)
    } else {
        status_text.trim()
    };
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {text}")
    }
}

/// A size for people: "64 MiB", "1.5 GiB", "300 KiB", "17 bytes".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let whole = bytes / size;
            let tenths = (bytes % size) * 10 / size;
            return if tenths == 0 {
                format!("{whole} {unit}")
            } else {
                format!("{whole}.{tenths} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// A short name for an image at `url`: its last path segment ("disk.img"), else the URL
/// ("data: URL" for the inline kind, which can be huge).
pub fn name_from_url(url: &str) -> String {
    if url.starts_with("data:") {
        return "data: URL".into();
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(last) if !last.is_empty() && !path.starts_with("blob:") => last.to_string(),
        _ => url.to_string(),
    }
}

/// What the answer to the probe (a GET of the first chunk with `Range: bytes=0-N`) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The server honours ranges: the image has `size` bytes and the body is its start.
    Ranged { size: u64 },
    /// The server ignores ranges: the body is the whole image.
    Whole,
}

/// Judge the probe response for `url` (`chunk` bytes were asked for). Errors name the URL and
/// say what was wrong.
pub fn judge_probe(
    url: &str,
    status: u16,
    status_text: &str,
    content_range: Option<&str>,
    body_len: u64,
    chunk: u64,
) -> Result<Probe, String> {
    match status {
        206 => {
            let Some(value) = content_range else {
                return Err(format!(
                    "{url}: the server answered the range request (HTTP 206) without a \
                     Content-Range header the page can read (a cross-origin server must send \
                     Access-Control-Expose-Headers: Content-Range)"
                ));
            };
            let cr = parse_content_range(value).ok_or_else(|| {
                format!("{url}: the server sent an unusable Content-Range header: {value:?}")
            })?;
            let Some(size) = cr.total else {
                return Err(format!(
                    "{url}: the server did not say how large the image is (Content-Range: \
                     {value})"
                ));
            };
            if cr.start != 0 || cr.end - cr.start != body_len || body_len > chunk.max(1) {
                return Err(format!(
                    "{url}: asked for bytes 0-{}, the server sent {body_len} bytes as {value}",
                    chunk.saturating_sub(1)
                ));
            }
            Ok(Probe::Ranged { size })
        }
        200 => Ok(Probe::Whole),
        _ => Err(format!("{url}: {}", status_line(status, status_text))),
    }
}

/// Check the response to a chunk request for bytes `start..end`: Ok if the body is those bytes.
pub fn judge_chunk(
    url: &str,
    status: u16,
    status_text: &str,
    content_range: Option<&str>,
    body_len: u64,
    start: u64,
    end: u64,
) -> Result<(), String> {
    match status {
        206 => {
            if let Some(cr) = content_range.and_then(parse_content_range) {
                if cr.start != start || cr.end != end {
                    return Err(format!(
                        "{url}: asked for bytes {start}-{}, the server sent {}-{}",
                        end - 1,
                        cr.start,
                        cr.end - 1
                    ));
                }
            }
            if body_len != end - start {
                return Err(format!(
                    "{url}: asked for {} bytes at {start}, the server sent {body_len}",
                    end - start
                ));
            }
            Ok(())
        }
        200 => Err(format!(
            "{url}: the server ignored the Range request (HTTP 200 instead of 206)"
        )),
        _ => Err(format!("{url}: {}", status_line(status, status_text))),
    }
}

/// How long to wait before attempt `attempt` of a request (1 = the first try, at once), in
/// milliseconds: 250 ms, doubling, at most 8 s.
pub fn retry_delay_ms(attempt: u32) -> u32 {
    match attempt {
        0 | 1 => 0,
        n => 250u32.saturating_mul(1 << (n - 2).min(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(
            parse_content_range("bytes 0-262143/4194304"),
            Some(ContentRange {
                start: 0,
                end: 262144,
                total: Some(4194304)
            })
        );
        assert_eq!(
            parse_content_range("bytes 10-19/*"),
            Some(ContentRange {
                start: 10,
                end: 20,
                total: None
            })
        );
        for bad in [
            "",
            "bytes */100",
            "bytes 5-4/100",
            "bytes 0-100/100",
            "items 0-1/2",
            "bytes 0-x/2",
            "bytes +1-2/10",
            "bytes 0-18446744073709551615/*",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn probe_answers_are_judged() {
        let u = "http://h/disk.img";
        assert_eq!(
            judge_probe(u, 206, "", Some("bytes 0-511/4096"), 512, 512),
            Ok(Probe::Ranged { size: 4096 })
        );
        // A small image: the server sends all of it as the range.
        assert_eq!(
            judge_probe(u, 206, "", Some("bytes 0-99/100"), 100, 512),
            Ok(Probe::Ranged { size: 100 })
        );
        assert_eq!(judge_probe(u, 200, "OK", None, 5, 512), Ok(Probe::Whole));
        assert_eq!(
            judge_probe(u, 404, "", None, 0, 512),
            Err("http://h/disk.img: HTTP 404 Not Found".into())
        );
        assert_eq!(
            judge_probe(u, 599, "Odd", None, 0, 512),
            Err("http://h/disk.img: HTTP 599 Odd".into())
        );
        let e = judge_probe(u, 206, "", None, 512, 512).unwrap_err();
        assert!(e.contains("Access-Control-Expose-Headers"), "{e}");
        let e = judge_probe(u, 206, "", Some("bytes 0-511/*"), 512, 512).unwrap_err();
        assert!(e.contains("how large"), "{e}");
        let e = judge_probe(u, 206, "", Some("bytes 0-511/4096"), 100, 512).unwrap_err();
        assert!(e.contains("sent 100 bytes"), "{e}");
    }

    #[test]
    fn chunk_answers_are_judged() {
        let u = "u";
        assert_eq!(
            judge_chunk(u, 206, "", Some("bytes 512-1023/4096"), 512, 512, 1024),
            Ok(())
        );
        // Content-Range unreadable (not exposed): the length decides.
        assert_eq!(judge_chunk(u, 206, "", None, 512, 512, 1024), Ok(()));
        assert!(judge_chunk(u, 206, "", None, 100, 512, 1024).is_err());
        assert!(judge_chunk(u, 206, "", Some("bytes 0-511/4096"), 512, 512, 1024).is_err());
        assert!(judge_chunk(u, 200, "", None, 4096, 512, 1024)
            .unwrap_err()
            .contains("ignored the Range"));
        assert_eq!(
            judge_chunk(u, 503, "", None, 0, 0, 1),
            Err("u: HTTP 503 Service Unavailable".into())
        );
    }

    #[test]
    fn sizes_names_and_delays() {
        assert_eq!(human_size(64 << 20), "64 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(17), "17 bytes");
        assert_eq!(
            name_from_url("https://x.org/img/disk.img?v=2#a"),
            "disk.img"
        );
        assert_eq!(name_from_url("disk.img"), "disk.img");
        assert_eq!(name_from_url("data:;base64,AAAA/x=="), "data: URL");
        assert_eq!(name_from_url("https://x.org/"), "https://x.org/");
        assert_eq!(
            name_from_url("blob:http://h/1234-abcd"),
            "blob:http://h/1234-abcd"
        );
        assert_eq!(
            [1, 2, 3, 4, 10, u32::MAX].map(retry_delay_ms),
            [0, 250, 500, 1000, 8000, 8000]
        );
    }
}
