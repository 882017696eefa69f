//! `wasm86 serve`: a static HTTP/1.1 file server for the page (`make run`) and for disk images
//! streamed with `Range` requests (by the page, and by the CLI's `--hda http://...`).
//!
//! Why our own: the page needs what common one-line servers lack (`python3 -m http.server`
//! ignores `Range`): byte ranges, `application/wasm`, CORS headers that expose `Content-Range`
//! to cross-origin fetches, and the COOP/COEP pair that makes the page cross-origin isolated.
//! `--no-range` turns ranges off, to test the fallback for servers without them.
//!
//! One thread per connection, keep-alive. Every request is answered or the connection closed:
//! bad request lines (400), oversized heads (431), unknown methods (405), paths that try to
//! leave the root (403), missing files (404), unsatisfiable ranges (416). Nothing a client sends
//! can panic the server.

use crate::http::{self, HeadError, RangeAnswer};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options of `wasm86 serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The directory to serve (`make site` builds `site/`).
    #[arg(long, value_name = "DIR", default_value = "site")]
    pub root: PathBuf,
    /// The TCP port (0: any free port; the line printed at start names it).
    #[arg(long, value_name = "N", default_value_t = 8080)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Ignore `Range` headers and always send whole files with 200 (to test the fallback for
    /// servers without range support).
    #[arg(long)]
    pub no_range: bool,
}

/// A connection idle this long between requests is closed (so dead clients do not keep
/// threads forever).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that stops reading for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request body up to this size is read and dropped so the connection can be reused; larger
/// ones close the connection after the answer.
const MAX_DISCARD: u64 = 64 * 1024;

struct Config {
    root: PathBuf,
    no_range: bool,
}

/// Run `wasm86 serve` until killed.
pub fn run(args: &ServeArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm86 serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let root = &args.root;
    let meta = std::fs::metadata(root).map_err(|e| {
        let hint = if args.root == Path::new("site") {
            " (`make site` builds it)"
        } else {
            ""
        };
        format!("--root {}: {e}{hint}", root.display())
    })?;
    if !meta.is_dir() {
        return Err(format!("--root {}: not a directory", root.display()));
    }
    let listener = TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    // An unspecified address (0.0.0.0) listens everywhere; loopback is one URL that reaches it.
    let shown = if local.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port())
    } else {
        local
    };
    {
        let mut out = io::stdout().lock();
        writeln!(out, "wasm86 serve: http://{shown}/")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    let config = Arc::new(Config {
        root: root.clone(),
        no_range: args.no_range,
    });
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let config = Arc::clone(&config);
                // A failed spawn (out of threads) drops the connection; the client retries.
                let _ = std::thread::Builder::new()
                    .name("serve-connection".into())
                    .spawn(move || serve_connection(stream, &config));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                eprintln!("wasm86 serve: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Serve requests on one connection until it closes, fails, or a response ends it.
fn serve_connection(stream: TcpStream, config: &Config) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut writer = BufWriter::new(write_half);
    loop {
        let keep_alive = match http::read_head(&mut reader) {
            Ok(head) => handle(&head, config, &mut reader, &mut writer),
            Err(HeadError::Closed | HeadError::Io(_)) => return,
            Err(HeadError::TooLarge) => {
                let mut r = Response::error(431, "Request Header Fields Too Large");
                r.close = true;
                r.send(&mut writer, false, None).map(|_| false)
            }
            Err(HeadError::Malformed(what)) => {
                let mut r = Response::error(400, "Bad Request");
                r.body = format!("400 Bad Request: {what}\n");
                r.close = true;
                r.send(&mut writer, false, None).map(|_| false)
            }
        };
        match keep_alive.and_then(|k| writer.flush().map(|_| k)) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

/// A response under construction: status, extra headers, and a body (a text, or a file range).
struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    close: bool,
}

impl Response {
    fn new(status: u16, reason: &'static str) -> Response {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: String::new(),
            close: false,
        }
    }

    /// An error answer with a plain-text body naming the status.
    fn error(status: u16, reason: &'static str) -> Response {
        let mut r = Response::new(status, reason);
        r.body = format!("{status} {reason}\n");
        r.headers
            .push(("Content-Type", "text/plain; charset=utf-8".into()));
        r
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Write the response. `file`: the body is `len` bytes of the file from its current
    /// position instead of `self.body`. A HEAD response (`head_only`) has the same headers and no
    /// body. `Ok(false)` when the connection must close afterwards.
    fn send(
        &self,
        w: &mut impl Write,
        head_only: bool,
        file: Option<(&mut File, u64)>,
    ) -> io::Result<bool> {
        let len = match &file {
            Some((_, n)) => *n,
            None => self.body.len() as u64,
        };
        let mut h = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        h.push_str(&format!(
            "Date: {}\r\nServer: wasm86\r\n",
            http_date(SystemTime::now())
        ));
        for (name, value) in &self.headers {
            h.push_str(&format!("{name}: {value}\r\n"));
        }
        // For the page: cross-origin reads of images (and their range headers), a cross-origin
        // isolated page (SharedArrayBuffer), and no stale copies while developing.
        h.push_str(
            "Access-Control-Allow-Origin: *\r\n\
             Access-Control-Expose-Headers: Content-Range, Content-Length, Accept-Ranges\r\n\
             Cross-Origin-Opener-Policy: same-origin\r\n\
             Cross-Origin-Embedder-Policy: require-corp\r\n\
             Cross-Origin-Resource-Policy: cross-origin\r\n\
             Cache-Control: no-cache\r\n",
        );
        if self.status != 204 {
            h.push_str(&format!("Content-Length: {len}\r\n"));
        }
        h.push_str(if self.close {
            "Connection: close\r\n\r\n"
        } else {
            "Connection: keep-alive\r\n\r\n"
        });
        w.write_all(h.as_bytes())?;
        if head_only || self.status == 204 {
            return Ok(!self.close);
        }
        match file {
            Some((f, n)) => {
                let copied = io::copy(&mut f.take(n), w)?;
                // The file shrank under us: the promised length cannot be kept; closing tells
                // the client the body is incomplete.
                Ok(!self.close && copied == n)
            }
            None => {
                w.write_all(self.body.as_bytes())?;
                Ok(!self.close)
            }
        }
    }
}

/// Answer one request; `Ok(true)` to keep the connection for the next one.
fn handle(
    head: &http::Head,
    config: &Config,
    reader: &mut BufReader<TcpStream>,
    w: &mut impl Write,
) -> io::Result<bool> {
    let mut parts = head.start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let mut r = Response::error(400, "Bad Request");
        r.close = true;
        return r.send(w, false, None);
    };
    if !http::is_token(method) || !version.starts_with("HTTP/") {
        let mut r = Response::error(400, "Bad Request");
        r.close = true;
        return r.send(w, false, None);
    }
    let keep_alive = match version {
        "HTTP/1.1" => !head.has_token("Connection", "close"),
        "HTTP/1.0" => head.has_token("Connection", "keep-alive"),
        _ => {
            let mut r = Response::error(505, "HTTP Version Not Supported");
            r.close = true;
            return r.send(w, false, None);
        }
    };

    // A body (GET and HEAD normally have none) must be consumed before the next request can
    // be read; a large or chunked one ends the connection instead.
    let mut close = !keep_alive;
    if head.get("Transfer-Encoding").is_some() {
        close = true;
    } else if let Some(cl) = head.get("Content-Length") {
        match cl.parse::<u64>() {
            Ok(n) if n <= MAX_DISCARD => {
                if io::copy(&mut reader.by_ref().take(n), &mut io::sink())? != n {
                    return Ok(false);
                }
            }
            Ok(_) => close = true,
            Err(_) => {
                let mut r = Response::error(400, "Bad Request");
                r.close = true;
                return r.send(w, false, None);
            }
        }
    }

    let head_only = method == "HEAD";
    let mut response = match method {
        "GET" | "HEAD" => {
            return serve_file(head, config, target, head_only, close, w);
        }
        // CORS preflight: a page on another origin may ask for ranges of our files.
        "OPTIONS" => Response::new(204, "No Content")
            .header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            .header(
                "Access-Control-Allow-Headers",
                allowed_request_headers(head.get("Access-Control-Request-Headers")),
            )
            .header("Access-Control-Max-Age", "86400")
            .header("Allow", "GET, HEAD, OPTIONS"),
        _ => Response::error(405, "Method Not Allowed").header("Allow", "GET, HEAD, OPTIONS"),
    };
    response.close = close;
    response.send(w, head_only, None)
}

/// The request headers a preflight may use: those it asked for when they are a plain list of
/// header names (echoing anything else could inject header lines), else the ones the page
/// needs.
fn allowed_request_headers(asked: Option<&str>) -> String {
    match asked {
        Some(list)
            if !list.trim().is_empty() && list.split(',').all(|n| http::is_token(n.trim())) =>
        {
            list.trim().to_string()
        }
        _ => "Range, If-Range, Content-Type".to_string(),
    }
}

/// Where `target` (the request target) lies under `root`; Err is the status to answer.
fn resolve(root: &Path, target: &str) -> Result<(PathBuf, bool), u16> {
    // The absolute form ("http://host/path") names the path after the authority.
    let target = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => target,
    };
    if !target.starts_with('/') {
        return Err(400);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let decoded = http::percent_decode(path).ok_or(400u16)?;
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Err(404);
    };
    let mut full = root.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            // Leaving the root, in any spelling (%2e%2e is decoded above).
            ".." => return Err(403),
            s if s.contains(['\0', '\\']) => return Err(403),
            s => full.push(s),
        }
    }
    Ok((full, decoded.ends_with('/')))
}

fn serve_file<W: Write>(
    head: &http::Head,
    config: &Config,
    target: &str,
    head_only: bool,
    close: bool,
    w: &mut W,
) -> io::Result<bool> {
    let fail = |status: u16, w: &mut W| -> io::Result<bool> {
        let reason = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Internal Server Error",
        };
        let mut r = Response::error(status, reason);
        r.close = close;
        r.send(w, head_only, None)
    };
    let (mut path, slash) = match resolve(&config.root, target) {
        Ok(p) => p,
        Err(status) => return fail(status, w),
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return fail(404, w);
    };
    if meta.is_dir() {
        if !slash {
            // Relative links in the directory's index.html need the trailing slash.
            let (path_part, query) = match target.split_once('?') {
                Some((p, q)) => (p, format!("?{q}")),
                None => (target, String::new()),
            };
            let mut r = Response::error(301, "Moved Permanently")
                .header("Location", format!("{path_part}/{query}"));
            r.close = close;
            return r.send(w, head_only, None);
        }
        path.push("index.html");
    }
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return fail(403, w),
        Err(_) => return fail(404, w),
    };
    let len = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return fail(404, w),
        Err(_) => return fail(500, w),
    };

    // RFC 9110 §13.1.5: without validators of ours (we send none), an If-Range never matches,
    // so the whole file is sent.
    let range = match head.get("Range") {
        Some(r) if !config.no_range && head.get("If-Range").is_none() => http::parse_range(r, len),
        _ => RangeAnswer::Whole,
    };
    let accept = if config.no_range { "none" } else { "bytes" };
    let (mut response, start, count) = match range {
        RangeAnswer::Whole => (Response::new(200, "OK"), 0, len),
        RangeAnswer::Part { start, end } => (
            Response::new(206, "Partial Content")
                .header("Content-Range", format!("bytes {start}-{}/{len}", end - 1)),
            start,
            end - start,
        ),
        RangeAnswer::Unsatisfiable => {
            let mut r = Response::error(416, "Range Not Satisfiable")
                .header("Content-Range", format!("bytes */{len}"))
                .header("Accept-Ranges", accept);
            r.close = close;
            return r.send(w, head_only, None);
        }
    };
    response = response
        .header("Content-Type", mime_type(&path))
        .header("Accept-Ranges", accept);
    response.close = close;
    if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
        return fail(500, w);
    }
    response.send(w, head_only, Some((&mut file, count)))
}

/// The Content-Type for a file name.
fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7) for the Date header: "Sun, 06 Nov 1994 08:49:37 GMT".
fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = wasm86::dev::rtc::civil_from_days(days as i64);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // a leap day
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv");
        assert_eq!(
            resolve(root, "/a/b.txt?x=1"),
            Ok((PathBuf::from("/srv/a/b.txt"), false))
        );
        assert_eq!(resolve(root, "/"), Ok((PathBuf::from("/srv"), true)));
        assert_eq!(
            resolve(root, "http://h:1/x%20y/"),
            Ok((PathBuf::from("/srv/x y"), true))
        );
        for bad in [
            "/../etc/passwd",
            "/a/%2e%2e/%2E%2E/x",
            "/a/..%2f..%2fx",
            "/%5c..",
        ] {
            assert_eq!(resolve(root, bad), Err(403), "{bad}");
        }
        assert_eq!(resolve(root, "x"), Err(400));
        assert_eq!(resolve(root, "/%zz"), Err(400));
    }
}
