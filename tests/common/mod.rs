//! Helpers the integration tests that run the `wasm86` binary share: a `wasm86 serve` process
//! and the CLI driven like a person at a terminal.
//!
//! Each test file that says `mod common;` compiles its own copy and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The MD5 of `data` in hex, by the host's `md5sum` (the same tool the guest's busybox mimics).
pub fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum (coreutils) on the host");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}

/// A running `wasm86 serve`, killed on drop.
pub struct Server {
    child: Child,
    /// "http://127.0.0.1:PORT/", as the server printed it.
    pub url: String,
    /// "127.0.0.1:PORT"
    pub addr: String,
}

impl Server {
    /// Serve `root` on a free port, with more options in `extra`.
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasm86"))
            .args(["serve", "--port", "0", "--root"])
            .arg(root)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start wasm86 serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("wasm86 serve: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let addr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("unexpected URL {url:?}"))
            .to_string();
        Server { child, url, addr }
    }

    /// The server process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stop the server now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the CLI with `args`; once `prompt` is on its output, call `at_prompt` and type `input`
/// (nothing when it is empty). Returns its success, stdout and stderr.
pub fn run_cli(
    args: &[&str],
    prompt: &str,
    at_prompt: impl FnOnce(),
    input: &str,
) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasm86"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e);
        e
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at_prompt = Some(at_prompt);
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if at_prompt.is_some() && find(&out, prompt.as_bytes()).is_some() {
            (at_prompt.take().unwrap())();
            if !input.is_empty() {
                let _ = stdin.write_all(input.as_bytes());
            }
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&out).into_owned(),
        err_thread.join().unwrap(),
    )
}
