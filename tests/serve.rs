//! `wasm86 serve` against raw HTTP/1.1 over TCP: the real binary, started on a free port
//! (`--port 0`) over a temporary directory. Checks GET and HEAD, byte ranges (206, 416),
//! MIME types, the CORS and cross-origin isolation headers, keep-alive, directory indexes,
//! path traversal refused, 404/405, bad requests answered without killing the server, and
//! `--no-range`.
//!
//! Run with `cargo test --release --test serve`.

mod common;

use common::Server;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A connection to `server` (a read that hangs fails the test after 20 s).
fn connect(server: &Server) -> Conn {
    let s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Conn(BufReader::new(s))
}

struct Conn(BufReader<TcpStream>);

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    /// Send raw request bytes and read one response (no body for HEAD).
    fn raw(&mut self, request: &[u8], head_only: bool) -> Resp {
        self.0.get_mut().write_all(request).unwrap();
        let mut status_line = String::new();
        self.0.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_only && status != 204 {
            let len: usize = r
                .header("Content-Length")
                .expect("Content-Length")
                .parse()
                .unwrap();
            r.body = vec![0; len];
            self.0.read_exact(&mut r.body).unwrap();
        }
        r
    }

    fn get(&mut self, path: &str, extra: &str) -> Resp {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
            false,
        )
    }

    /// The server closed the connection (read returns end of input).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

/// A temporary site: `root/` with files, and a secret file beside it (outside the root).
fn site(tag: &str) -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("wasm86-serve-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("index.html"), "<p>top</p>\n").unwrap();
    std::fs::write(root.join("sub/index.html"), "<p>sub</p>\n").unwrap();
    std::fs::write(root.join("app.js"), "export {};\n").unwrap();
    std::fs::write(root.join("data.json"), "{}\n").unwrap();
    std::fs::write(root.join("a b.txt"), "spaced\n").unwrap();
    std::fs::write(root.join("empty.bin"), "").unwrap();
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(root.join("module.wasm"), &blob).unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP SECRET\n").unwrap();
    (root, blob)
}

fn cleanup(root: &Path) {
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

#[test]
fn get_and_head_with_page_headers() {
    let (root, blob) = site("get");
    let server = Server::start(&root, &[]);
    let mut c = connect(&server);

    let r = c.get("/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<p>top</p>\n");
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    for (name, value) in [
        ("Access-Control-Allow-Origin", "*"),
        (
            "Access-Control-Expose-Headers",
            "Content-Range, Content-Length, Accept-Ranges",
        ),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Embedder-Policy", "require-corp"),
        ("Cross-Origin-Resource-Policy", "cross-origin"),
        ("Cache-Control", "no-cache"),
        ("Accept-Ranges", "bytes"),
    ] {
        assert_eq!(r.header(name), Some(value), "{name} in {r:?}");
    }

    // Same connection (keep-alive): HEAD has GET's headers and no body.
    let h = c.raw(b"HEAD /module.wasm HTTP/1.1\r\nHost: t\r\n\r\n", true);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("100000"));
    assert_eq!(h.header("Content-Type"), Some("application/wasm"));
    let r = c.get("/module.wasm", "");
    assert_eq!(r.status, 200);
    assert!(r.body == blob, "the .wasm body differs");

    for (path, mime) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/a%20b.txt", "text/plain; charset=utf-8"),
        ("/empty.bin", "application/octet-stream"),
    ] {
        let r = c.get(path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Type"), Some(mime), "{path}");
    }

    // Directories: a redirect to the slash form, then their index.html.
    let r = c.get("/sub?x=1", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/sub/?x=1"));
    let r = c.get("/sub/", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<p>sub</p>\n"[..]));
    assert_eq!(c.get("/empty%20dir/", "").status, 404);

    // Missing files and other methods: plain-text errors.
    let r = c.get("/nope.html", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert!(String::from_utf8_lossy(&r.body).contains("404 Not Found"));
    let r = c.raw(
        b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        false,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
    // CORS preflight.
    let r = c.raw(
        b"OPTIONS /module.wasm HTTP/1.1\r\nHost: t\r\nOrigin: http://x\r\n\
          Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(r.header("Access-Control-Allow-Headers"), Some("range"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    // Still the same connection after all of that.
    assert_eq!(c.get("/", "").status, 200);
    // Connection: close is honoured.
    let r = c.get("/", "Connection: close\r\n");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed());
    cleanup(&root);
}

#[test]
fn byte_ranges() {
    let (root, blob) = site("ranges");
    let server = Server::start(&root, &[]);
    let mut c = connect(&server);
    let len = blob.len();
    for (range, start, end) in [
        ("bytes=0-0", 0, 1),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=99990-", 99_990, len),
        ("bytes=-16", len - 16, len),
        ("bytes=-200000", 0, len),
        ("bytes=99000-500000", 99_000, len),
    ] {
        let r = c.get("/module.wasm", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {start}-{}/{len}", end - 1).as_str()),
            "{range}"
        );
        assert_eq!(r.header("Content-Type"), Some("application/wasm"));
        assert!(r.body == blob[start..end], "{range}: wrong bytes");
    }
    // A HEAD with a range describes the part.
    let h = c.raw(
        b"HEAD /module.wasm HTTP/1.1\r\nHost: t\r\nRange: bytes=10-19\r\n\r\n",
        true,
    );
    assert_eq!((h.status, h.header("Content-Length")), (206, Some("10")));
    // Unsatisfiable: 416 with the size.
    for range in ["bytes=100000-", "bytes=200000-300000", "bytes=-0"] {
        let r = c.get("/module.wasm", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("Content-Range"), Some("bytes */100000"));
    }
    assert_eq!(c.get("/empty.bin", "Range: bytes=0-10\r\n").status, 416);
    // Bogus or multiple ranges are ignored: the whole file.
    for range in [
        "bytes=9-1",
        "bytes=x-y",
        "bytes=1-2,5-6",
        "lines=1-2",
        "bytes=--5",
    ] {
        let r = c.get("/module.wasm", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body.len(), len, "{range}");
    }
    cleanup(&root);
}

#[test]
fn no_range_sends_whole_files() {
    let (root, blob) = site("norange");
    let server = Server::start(&root, &["--no-range"]);
    let mut c = connect(&server);
    let r = c.get("/module.wasm", "Range: bytes=0-99\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Range").is_none());
    assert_eq!(r.header("Accept-Ranges"), Some("none"));
    assert!(r.body == blob);
    cleanup(&root);
}

#[test]
fn paths_outside_the_root_are_refused() {
    let (root, _) = site("traversal");
    let mut server = Server::start(&root, &[]);
    let mut c = connect(&server);
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "http://t/../secret.txt",
    ] {
        let r = c.get(path, "");
        assert_eq!(r.status, 403, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{path} leaked the file"
        );
    }
    // A dot segment that stays inside is fine.
    assert_eq!(c.get("/sub/./index.html", "").status, 200);
    assert!(server.alive());
    cleanup(&root);
}

#[test]
fn bad_requests_are_answered_and_the_server_survives() {
    let (root, _) = site("bad");
    let mut server = Server::start(&root, &[]);

    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET /\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1 extra\r\n\r\n".to_vec(), 400),
        (b"G(T / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n".to_vec(), 400),
        (
            b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /\x01 HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(200)).into_bytes(),
            431,
        ),
    ];
    for (request, status) in cases {
        let mut c = connect(&server);
        let r = c.raw(&request, false);
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert!(c.closed(), "the connection stays open after {status}");
    }
    // A bad target is answered and the connection stays usable.
    let mut c = connect(&server);
    for target in ["/%zz", "relative", "/%", "*"] {
        assert_eq!(c.get(target, "").status, 400, "{target}");
    }
    assert_eq!(c.get("/", "").status, 200);
    // A client that sends half a head and hangs up, and one that sends binary noise.
    {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    }
    {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 131 % 256) as u8).collect();
        let _ = s.write_all(&noise);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.alive(), "the server died");
    let mut c = connect(&server);
    assert_eq!(c.get("/", "").status, 200);
    cleanup(&root);
}

#[test]
fn a_missing_root_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(["serve", "--port", "0", "--root", "/nonexistent/site"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--root /nonexistent/site"), "{err}");
}
