//! Harness for wasm86's end-to-end tests: the project's own server (`wasm86 serve`) on the
//! assembled site, Debian's chromedriver with a private headless Chromium, and a handle on the
//! page's automation API (`window.wasm86`, or `.machine` of a `<wasm86-machine>` widget).
//!
//! Every helper returns `Result<_, String>` with a message meant for a person reading a failed
//! CI log: what was expected, what the page showed (`#error`, `error()`, `stats()`), and the
//! tail of the serial console. [`run`] closes the browser and kills every process it started
//! before it turns an error into a test failure, so a failed run leaves nothing behind.

use serde_json::{json, Value};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use fantoccini::Client;

/// Every fallible step of a test: the error is the message the test fails with.
pub type Res<T> = Result<T, String>;

/// How much of the serial console a failure message quotes (its end).
const SERIAL_TAIL: usize = 2048;
/// How often the page is polled while waiting.
const POLL: Duration = Duration::from_millis(400);

/// The webdriver/ directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository root (webdriver/..).
pub fn repo_dir() -> PathBuf {
    crate_dir().join("..")
}

/// Time allowed for one boot to a shell prompt (`WASM86_E2E_TIMEOUT` seconds, default 180): a
/// CI machine shared by several builds boots far slower than an idle one.
pub fn boot_timeout() -> Duration {
    let secs = std::env::var("WASM86_E2E_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// The assembled site (`make site`), or `WASM86_SITE`.
pub fn site_dir() -> Res<PathBuf> {
    let dir = std::env::var_os("WASM86_SITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("site"));
    if !dir.join("index.html").is_file() {
        return Err(format!(
            "the site is not assembled: {} has no index.html (run `make site` in the repository \
             root, or set WASM86_SITE)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The native `wasm86` binary (`cargo build --release` in the repository root), or `WASM86_BIN`.
pub fn wasm86_bin() -> Res<PathBuf> {
    let bin = std::env::var_os("WASM86_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join("target/release/wasm86"));
    if !bin.is_file() {
        return Err(format!(
            "the wasm86 binary is missing at {} (run `cargo build --release` in the repository \
             root, or set WASM86_BIN)",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Keeps the last `cap` bytes written to it: the tail of a child's stderr for failure messages.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<Vec<u8>>>);

impl Tail {
    fn push(&self, bytes: &[u8], cap: usize) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.extend_from_slice(bytes);
        if v.len() > cap {
            let cut = v.len() - cap;
            v.drain(..cut);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Drain `r` into the tail on a thread until it closes.
    fn drain_from(&self, mut r: impl Read + Send + 'static) {
        let tail = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n], 8192);
            }
        });
    }
}

/// Kill a child and reap it. Errors are ignored: it may have exited already.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `wasm86 serve --root SITE --port 0`, seen through a [`Proxy`] that records every request.
pub struct Server {
    child: Child,
    stderr: Tail,
    /// The server's own URL, as it printed it.
    pub direct_url: String,
    proxy: Proxy,
}

impl Server {
    /// Serve the assembled site ([`site_dir`]).
    pub fn start() -> Res<Server> {
        Server::start_at(&site_dir()?)
    }

    /// Serve the directory `site` (e.g. the benchmark's root, a copy of the site plus v86).
    pub fn start_at(site: &Path) -> Res<Server> {
        let bin = wasm86_bin()?;
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--root")
            .arg(site)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", bin.display()))?;
        let stderr = Tail::default();
        if let Some(err) = child.stderr.take() {
            stderr.drain_from(err);
        }
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        // The first line names the URL; read it on a thread so a server that never prints
        // fails the test instead of hanging it. The rest of stdout is drained so the server
        // never blocks on a full pipe.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let got = r.read_line(&mut line).map(|_| line);
            let _ = tx.send(got);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) => line,
            other => {
                kill_child(&mut child);
                return Err(format!(
                    "`{} serve` printed no URL line within 30 s ({other:?}); stderr:\n{}",
                    bin.display(),
                    stderr.text()
                ));
            }
        };
        let url = match parse_serve_line(&line) {
            Some(url) => url,
            None => {
                kill_child(&mut child);
                return Err(format!(
                    "`wasm86 serve` printed {line:?}, expected `wasm86 serve: http://127.0.0.1:PORT/`; \
                     stderr:\n{}",
                    stderr.text()
                ));
            }
        };
        let upstream = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let proxy = match Proxy::start(upstream) {
            Ok(p) => p,
            Err(e) => {
                kill_child(&mut child);
                return Err(e);
            }
        };
        Ok(Server {
            child,
            stderr,
            direct_url: url,
            proxy,
        })
    }

    /// The base URL the browser uses (the recording proxy), ending in "/".
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.proxy.port)
    }

    /// Every request seen so far: "GET /path" plus " Range: bytes=a-b" when ranged.
    pub fn requests(&self) -> Vec<String> {
        self.proxy
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The tail of the server's stderr.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// `wasm86 serve: http://127.0.0.1:PORT/` -> the URL.
fn parse_serve_line(line: &str) -> Option<String> {
    let url = line.trim().strip_prefix("wasm86 serve: ")?;
    let rest = url.strip_prefix("http://")?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().ok()? == 0 {
        return None;
    }
    Some(url.to_string())
}

/// A TCP relay in front of the server that writes down each request line (and its Range
/// header). The browser's own resource timing cannot see fetches made by a Web Worker; this
/// sees every request, which is what "nothing was downloaded before the widget started" needs.
struct Proxy {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Res<Proxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: bind failed: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("proxy: {e}"))?
            .port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                relay(client, server, log2.clone());
            }
        });
        Ok(Proxy { port, log, stop })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Pump bytes both ways between a browser connection and the server; log requests.
fn relay(client: TcpStream, server: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (mut s_read, mut c_write) = (server, client);
    std::thread::spawn(move || {
        // Browser -> server. Requests here carry no bodies (GET, HEAD, OPTIONS), so every
        // blank line ends one request's header block.
        let mut head: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if s_write.write_all(&buf[..n]).is_err() {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            while let Some(end) = find(&head, b"\r\n\r\n") {
                let block = String::from_utf8_lossy(&head[..end]).into_owned();
                head.drain(..end + 4);
                let mut lines = block.lines();
                let first = lines.next().unwrap_or("");
                let mut entry: String = first.split(' ').take(2).collect::<Vec<_>>().join(" ");
                for l in lines {
                    if l.to_ascii_lowercase().starts_with("range:") {
                        entry.push_str(" Range: ");
                        entry.push_str(l[6..].trim());
                    }
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            }
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Both);
    });
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `/usr/bin/chromedriver` (or `CHROMEDRIVER`) on a free port, with a fresh Chromium profile.
/// Dropping it kills chromedriver and any Chromium process still using the profile, and deletes
/// the profile.
pub struct ChromeDriver {
    child: Child,
    port: u16,
    profile: PathBuf,
    log: Tail,
}

impl ChromeDriver {
    pub fn start() -> Res<ChromeDriver> {
        let exe = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
        if !exe.is_file() {
            return Err(format!(
                "chromedriver not found at {} (apt-get install chromium chromium-driver, or set \
                 CHROMEDRIVER)",
                exe.display()
            ));
        }
        let profile = unique_temp_dir("wasm86-e2e-chrome")?;
        // A free port: bind, note, release. Another process could take it in between; then
        // chromedriver fails to listen and `wait_listening` says so.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut child = Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let log = Tail::default();
        if let Some(out) = child.stdout.take() {
            log.drain_from(out);
        }
        if let Some(err) = child.stderr.take() {
            log.drain_from(err);
        }
        let driver = ChromeDriver {
            child,
            port,
            profile,
            log,
        };
        driver.wait_listening()?;
        Ok(driver)
    }

    fn wait_listening(&self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "chromedriver did not listen on port {} within 30 s; its output:\n{}",
            self.port,
            self.log.text()
        ))
    }

    /// A WebDriver session with headless Chromium.
    pub async fn connect(&self) -> Res<Client> {
        self.connect_with(&[]).await
    }

    /// A WebDriver session with headless Chromium, with more command-line switches (e.g.
    /// `--js-flags=--expose-gc`).
    pub async fn connect_with(&self, extra_args: &[String]) -> Res<Client> {
        let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--window-size=1280,960",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra_args.iter().cloned());
        args.push(format!("--user-data-dir={}", self.profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chrome, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .map_err(|e| {
                format!(
                    "no WebDriver session with Chromium ({e}); chromedriver said:\n{}",
                    self.log.text()
                )
            })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // chromedriver and Chromium stay in the test's process group, so an interrupted run
        // (Ctrl-C) takes them down with it. Here the session has normally ended already and
        // Chromium has quit; what is left is killed by id: chromedriver, then any Chromium
        // process still using this driver's profile directory, which no one else uses.
        kill_child(&mut self.child);
        for pid in pids_with_arg(&self.profile.to_string_lossy()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Processes whose command line contains `needle`.
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A fresh directory under the system's temporary directory, named after `tag`.
pub fn unique_temp_dir(tag: &str) -> Res<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// What a test gets: the browser and the server.
pub struct Env {
    pub client: Client,
    pub server: Arc<Server>,
}

impl Env {
    /// An absolute URL for `path` (relative to the site root, e.g. "?memory=1").
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path.trim_start_matches('/'))
    }

    /// Navigate; the returned instant is taken just before the navigation started.
    pub async fn goto(&self, path: &str) -> Res<Instant> {
        let t0 = Instant::now();
        self.client
            .goto(&self.url(path))
            .await
            .map_err(|e| format!("loading {path} failed: {e}"))?;
        Ok(t0)
    }

    /// Run `body` in the page (WebDriver Execute Script; `return` gives the result).
    pub async fn js(&self, body: &str, args: Vec<Value>) -> Res<Value> {
        js(&self.client, body, args).await
    }

    /// The index page's machine, `window.wasm86`.
    pub fn index_machine(&self) -> Machine {
        Machine::new(&self.client, "window.wasm86", "window.wasm86")
    }

    /// The `.machine` of the `<wasm86-machine>` element with this id.
    pub fn widget(&self, id: &str) -> Machine {
        Machine::new(
            &self.client,
            &format!("(document.getElementById({id:?}) || {{}}).machine"),
            &format!("#{id}"),
        )
    }

    /// Save a PNG screenshot of the viewport to webdriver/screenshots/NAME; its bytes.
    pub async fn screenshot(&self, name: &str) -> Res<Vec<u8>> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot failed: {e}"))?;
        let dir = crate_dir().join("screenshots");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, &png).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(png)
    }
}

pub async fn js(client: &Client, body: &str, args: Vec<Value>) -> Res<Value> {
    client
        .execute(body, args)
        .await
        .map_err(|e| format!("script failed in the page: {e}\nscript: {body}"))
}

/// What [`run_with`] sets up differently from [`run`].
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Serve this directory instead of the assembled site ([`site_dir`]).
    pub root: Option<PathBuf>,
    /// More Chromium command-line switches.
    pub chrome_args: Vec<String>,
}

/// Run one end-to-end test: start the server, chromedriver and a browser session, run `test`,
/// then close the browser and stop everything, and only then fail with `test`'s error. Panics
/// inside `test` still stop every process (the guards are dropped while unwinding).
pub async fn run<F, Fut>(test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    run_with(Setup::default(), test).await
}

/// [`run`] with another root to serve or more Chromium switches.
pub async fn run_with<F, Fut>(setup: Setup, test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    let server = match &setup.root {
        Some(root) => Server::start_at(root),
        None => Server::start(),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    let driver = ChromeDriver::start().unwrap_or_else(|e| panic!("{e}"));
    let client = match driver.connect_with(&setup.chrome_args).await {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let server = Arc::new(server);
    let env = Env {
        client: client.clone(),
        server: server.clone(),
    };
    let result = test(env).await;
    // Ending the session makes chromedriver quit Chromium cleanly; the driver's Drop is the
    // backstop.
    let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
    drop(driver);
    if let Err(e) = result {
        let requests = server.requests();
        let last: Vec<&String> = requests.iter().rev().take(12).rev().collect();
        panic!(
            "{e}\nlast HTTP requests ({} in all): {last:#?}\nwasm86 serve stderr: {:?}",
            requests.len(),
            tail(&server.stderr(), 2048)
        );
    }
}

/// `stats()` of a machine.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub instructions: f64,
    pub mips: f64,
    pub downloaded_bytes: f64,
    pub state: String,
}

impl Stats {
    fn from_json(v: &Value) -> Res<Stats> {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("stats() has no number `{k}`: {v}"))
        };
        Ok(Stats {
            instructions: num("instructions")?,
            mips: num("mips")?,
            downloaded_bytes: num("downloadedBytes")?,
            state: v
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("stats() has no string `state`: {v}"))?
                .to_string(),
        })
    }
}

/// Everything a wait looks at, read in one round trip.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The machine object does not exist (yet).
    pub missing: bool,
    pub serial: String,
    pub screen: String,
    pub stats: Option<Stats>,
    /// `error()` of the machine.
    pub error: Option<String>,
    /// Text of the page's `#error` box and whether it is visible.
    pub page_error: Option<String>,
    pub page_error_visible: bool,
    /// Text of the page's `#status` line.
    pub status: Option<String>,
    /// Getters that threw, with their exception text.
    pub thrown: Vec<String>,
}

/// The automation API of one machine: `expr` is a JS expression for the object.
pub struct Machine {
    client: Client,
    expr: String,
    name: String,
}

/// The script prologue: `m` is the machine (or undefined), `vis(el)` tells whether an element
/// is shown.
fn prologue(expr: &str) -> String {
    format!(
        "const m = (function() {{ try {{ return {expr}; }} catch (e) {{ return undefined; }} }})();\n\
         const vis = el => {{ if (!el || el.hidden) return false; const s = getComputedStyle(el); \
         return s.display !== 'none' && s.visibility !== 'hidden' && el.getClientRects().length > 0; }};\n"
    )
}

impl Machine {
    fn new(client: &Client, expr: &str, name: &str) -> Machine {
        Machine {
            client: client.clone(),
            expr: expr.to_string(),
            name: name.to_string(),
        }
    }

    /// Run `body` with `m` bound to the machine; fails if it does not exist.
    pub async fn call(&self, body: &str, args: Vec<Value>) -> Res<Value> {
        let script = format!(
            "{}if (m === undefined || m === null) return {{ __missing: true }};\n{body}",
            prologue(&self.expr)
        );
        let v = js(&self.client, &script, args).await?;
        if v.get("__missing").is_some() {
            return Err(format!("{} does not exist on the page", self.name));
        }
        Ok(v)
    }

    /// Call the method `name` with `args`, as an action (its result is ignored).
    pub async fn act(&self, method: &str, args: Vec<Value>) -> Res<()> {
        self.call(&format!("m.{method}(...arguments); return null;"), args)
            .await
            .map(|_| ())
            .map_err(|e| format!("{}.{method}() failed: {e}", self.name))
    }

    pub async fn send_serial(&self, text: &str) -> Res<()> {
        self.act("sendSerial", vec![json!(text)]).await
    }

    pub async fn type_text(&self, text: &str) -> Res<()> {
        self.act("typeText", vec![json!(text)]).await
    }

    /// Press and release the key `code` (a `KeyboardEvent.code`, e.g. "ArrowDown"), as the
    /// page's keyboard does.
    pub async fn press_key(&self, code: &str) -> Res<()> {
        self.act("key", vec![json!(code), json!(true)]).await?;
        self.act("key", vec![json!(code), json!(false)]).await
    }

    pub async fn stats(&self) -> Res<Stats> {
        let v = self.call("return m.stats();", vec![]).await?;
        Stats::from_json(&v)
    }

    pub async fn snapshot(&self) -> Res<Snapshot> {
        let script = format!(
            "{}const out = {{ thrown: [] }};\n\
             const errEl = document.getElementById('error');\n\
             out.pageError = errEl ? errEl.textContent : null;\n\
             out.pageErrorVisible = vis(errEl);\n\
             const st = document.getElementById('status');\n\
             out.status = st ? st.textContent : null;\n\
             out.missing = (m === undefined || m === null);\n\
             if (!out.missing) {{\n\
               for (const [k, f] of [['serial', 'serialText'], ['screen', 'screenText'], \
                                     ['stats', 'stats'], ['error', 'error']]) {{\n\
                 try {{ out[k] = m[f](); }} catch (e) {{ out.thrown.push(f + '(): ' + e); }}\n\
               }}\n\
             }}\n\
             return out;",
            prologue(&self.expr)
        );
        let v = js(&self.client, &script, vec![]).await?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut thrown: Vec<String> = v
            .get("thrown")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let stats = match v.get("stats") {
            Some(sv) if !sv.is_null() => match Stats::from_json(sv) {
                Ok(st) => Some(st),
                Err(e) => {
                    thrown.push(e);
                    None
                }
            },
            _ => None,
        };
        Ok(Snapshot {
            missing: v.get("missing").and_then(Value::as_bool).unwrap_or(true),
            serial: s("serial").unwrap_or_default(),
            screen: s("screen").unwrap_or_default(),
            stats,
            error: s("error"),
            page_error: s("pageError"),
            page_error_visible: v
                .get("pageErrorVisible")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            status: s("status"),
            thrown,
        })
    }

    /// What the page shows, for a failure message.
    pub fn describe(&self, s: &Snapshot) -> String {
        let mut out = String::new();
        if s.missing {
            out.push_str(&format!("{} does not exist on the page\n", self.name));
        }
        out.push_str(&format!(
            "#error ({}): {:?}\n",
            if s.page_error_visible {
                "visible"
            } else {
                "hidden"
            },
            s.page_error.as_deref().unwrap_or("<no #error element>")
        ));
        out.push_str(&format!("#status: {:?}\n", s.status));
        out.push_str(&format!("{}.error(): {:?}\n", self.name, s.error));
        out.push_str(&format!("{}.stats(): {:?}\n", self.name, s.stats));
        for t in &s.thrown {
            out.push_str(&format!("threw: {t}\n"));
        }
        let serial = &s.serial;
        let mut cut = serial.len().saturating_sub(SERIAL_TAIL);
        while !serial.is_char_boundary(cut) {
            cut += 1;
        }
        out.push_str(&format!(
            "last {} bytes of serialText() (of {}):\n{}\n",
            serial.len() - cut,
            serial.len(),
            &serial[cut..]
        ));
        if !s.screen.is_empty() {
            out.push_str(&format!("screenText():\n{}\n", s.screen));
        }
        out
    }

    /// Poll until `check` returns Some; on timeout fail with `what` and what the page shows.
    /// A machine in the "error" state fails at once (unless `check` accepts it first).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Snapshot) -> Option<T>,
    ) -> Res<T> {
        let t0 = Instant::now();
        loop {
            let snap = self.snapshot().await?;
            if let Some(t) = check(&snap) {
                return Ok(t);
            }
            let failed = snap.stats.as_ref().is_some_and(|s| s.state == "error");
            if failed || t0.elapsed() > timeout {
                return Err(format!(
                    "{}: {} {what} after {:.1} s\n{}",
                    self.name,
                    if failed {
                        "the machine failed while waiting for"
                    } else {
                        "timed out waiting for"
                    },
                    t0.elapsed().as_secs_f64(),
                    self.describe(&snap)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait until `needle` appears in serialText() at or after byte `from`; the byte offset
    /// just after it.
    pub async fn wait_serial(&self, needle: &str, from: usize, timeout: Duration) -> Res<usize> {
        self.wait_for(&format!("{needle:?} on the serial console"), timeout, |s| {
            let from = from.min(s.serial.len());
            s.serial
                .get(from..)
                .and_then(|t| t.find(needle))
                .map(|p| from + p + needle.len())
        })
        .await
    }

    /// Wait for the `ready` promise to settle: `Ok(Ok(()))` if it resolved, `Ok(Err(message))`
    /// if it rejected.
    pub async fn ready_outcome(&self, timeout: Duration) -> Res<Result<(), String>> {
        let v = self
            .call(
                "const p = m.ready;\n\
                 if (!p || typeof p.then !== 'function') return { notPromise: String(p) };\n\
                 const key = arguments[0];\n\
                 window.__e2eReady = window.__e2eReady || {};\n\
                 window.__e2eReady[key] = 'pending';\n\
                 p.then(() => { window.__e2eReady[key] = 'resolved'; },\n\
                        e => { window.__e2eReady[key] = 'rejected: ' + \
                               (e && e.message !== undefined ? e.message : String(e)); });\n\
                 return null;",
                vec![json!(self.name)],
            )
            .await?;
        if let Some(p) = v.get("notPromise") {
            return Err(format!("{}.ready is not a Promise: {p}", self.name));
        }
        let t0 = Instant::now();
        loop {
            let v = js(
                &self.client,
                "return (window.__e2eReady || {})[arguments[0]] || null;",
                vec![json!(self.name)],
            )
            .await?;
            match v.as_str() {
                Some("resolved") => return Ok(Ok(())),
                Some(r) if r.starts_with("rejected: ") => {
                    return Ok(Err(r["rejected: ".len()..].to_string()))
                }
                _ => {}
            }
            if t0.elapsed() > timeout {
                let snap = self.snapshot().await?;
                return Err(format!(
                    "{}.ready did not settle within {:.0} s\n{}",
                    self.name,
                    timeout.as_secs_f64(),
                    self.describe(&snap)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The machine's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Remove ANSI escape sequences (CSI `ESC [ ... final`, and two-byte `ESC x`) and carriage
/// returns: the serial console carries the line editor's cursor control.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // CSI sequences end at a final byte in '@'..='~'; other escapes are two bytes.
            '\u{1b}' => {
                if let Some('[') = chars.next() {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `text` without the kernel's log lines (`[    4.602095] ...` up to and including the end of
/// the line): the kernel prints on the serial console whenever it likes, in the middle of a
/// command's echo too, and what is left around the message joins up again.
pub fn without_kernel_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('[') {
        let stamp = rest[at + 1..]
            .find(']')
            .map(|end| &rest[at + 1..at + 1 + end]);
        let is_stamp = stamp.is_some_and(|t| {
            let t = t.trim_start();
            t.contains('.') && !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.')
        });
        if !is_stamp {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            continue;
        }
        out.push_str(&rest[..at]);
        rest = match rest[at..].find('\n') {
            Some(nl) => &rest[at + nl + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Whether some line of `text`, trimmed, equals `line`.
pub fn has_line(text: &str, line: &str) -> bool {
    plain(text).lines().any(|l| l.trim() == line)
}

/// The last `n` bytes of `s` (on a char boundary), for messages.
pub fn tail(s: &str, n: usize) -> &str {
    let mut cut = s.len().saturating_sub(n);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    &s[cut..]
}

/// Count pixels that are not black in the `rect` (x, y, w, h in PNG pixels) of a PNG image.
pub fn non_black_pixels(png_bytes: &[u8], rect: (u32, u32, u32, u32)) -> Res<(u64, u64)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("screenshot is not a PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("screenshot PNG too large")?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("screenshot PNG: {e}"))?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => return Err(format!("screenshot PNG has colour type {other:?}")),
    };
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!("screenshot PNG has bit depth {:?}", info.bit_depth));
    }
    let (x0, y0) = (rect.0.min(info.width), rect.1.min(info.height));
    let x1 = (rect.0 + rect.2).min(info.width);
    let y1 = (rect.1 + rect.3).min(info.height);
    let mut lit = 0u64;
    for y in y0..y1 {
        let row = &buf[y as usize * info.line_size..][..info.line_size];
        for x in x0..x1 {
            let p = &row[x as usize * channels..][..3];
            if p.iter().any(|&c| c > 24) {
                lit += 1;
            }
        }
    }
    Ok((lit, u64::from(x1 - x0) * u64::from(y1 - y0)))
}

/// Size of a file in the site (e.g. "images/disk.img").
pub fn site_file_size(rel: &str) -> Res<u64> {
    let p: PathBuf = site_dir()?.join(rel);
    std::fs::metadata(&p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// The leak test's hook (`leak_hook.js`): run in a page, it counts live Workers, listeners on
/// long-lived targets, observers, intervals and object URLs (`window.__leaks.counts()`).
pub const LEAK_HOOK: &str = include_str!("leak_hook.js");

/// The npm package `make package` packed (`target/package/wasm86-VERSION.tgz`), or
/// `WASM86_PACKAGE`.
pub fn package_tarball() -> Res<PathBuf> {
    if let Some(p) = std::env::var_os("WASM86_PACKAGE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("WASM86_PACKAGE={} is not a file", p.display()))
        };
    }
    let dir = repo_dir().join("target/package");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with("wasm86-") && name.ends_with(".tgz")
                })
                .collect()
        })
        .unwrap_or_default();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no wasm86-*.tgz in {} (run `make package` in the repository root, or set \
             WASM86_PACKAGE)",
            dir.display()
        )),
        many => Err(format!(
            "several packages in {}: {many:?} (run `make package` again)",
            dir.display()
        )),
    }
}

/// A directory removed (with everything in it) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Res<TempDir> {
        unique_temp_dir(tag).map(TempDir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_lines_are_taken_out_of_a_command_s_echo() {
        let serial = "wasm86:/ # e[    4.602095] clocksource: watchdog\n[    4.624501] \
                      clocksource: Switched to clocksource pit\ncho changed\nchanged\n";
        assert_eq!(
            without_kernel_log(serial),
            "wasm86:/ # echo changed\nchanged\n"
        );
        assert_eq!(without_kernel_log("a [b] [1] [x.2]\n"), "a [b] [1] [x.2]\n");
    }

    #[test]
    fn serve_line_is_parsed() {
        assert_eq!(
            parse_serve_line("wasm86 serve: http://127.0.0.1:43123/\n").as_deref(),
            Some("http://127.0.0.1:43123/")
        );
        assert_eq!(parse_serve_line("listening on 8080"), None);
        assert_eq!(parse_serve_line("wasm86 serve: http://127.0.0.1:0/"), None);
    }

    #[test]
    fn escapes_are_stripped_and_lines_found() {
        let t = "echo $((6*7))\r\n\u{1b}[6n42\r\n\u{1b}[1;32mwasm86:/ # ";
        assert_eq!(plain(t), "echo $((6*7))\n42\nwasm86:/ # ");
        assert!(has_line(t, "42"));
        assert!(!has_line("420\n", "42"));
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aé", 2), "é");
        assert_eq!(tail("abc", 10), "abc");
    }
}
