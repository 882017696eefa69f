//! Fuzz harnesses for wasm86: one function per target, each taking the fuzzer's bytes and
//! driving one part of the emulator that takes input from outside (guest code, guest device
//! accesses, files, HTTP answers, the page). A harness returns normally for every input; the
//! fuzzer reports a crash when the emulator panics, hangs (libFuzzer's `-timeout`) or grows
//! the host's memory without bound (`-rss_limit_mb`, `-malloc_limit_mb`).
//!
//! The targets in `fuzz_targets/` are one-line wrappers around these functions, and the main
//! crate's `tests/fuzz_regressions.rs` includes this same file (with `#[path]`) to replay every
//! input that once crashed a target, so a regression test runs exactly the code the fuzzer
//! ran. That is also why the harnesses use only wasm86's public API and no other crate: the
//! main crate's tests compile them without extra dependencies.
//!
//! Inputs are plain bytes read front to back by [`Input`]; once the bytes run out every read
//! gives zeros, so any input, even an empty one, is a complete program for a harness.

pub mod bzimage;
pub mod cpu;
pub mod devices;
pub mod disk_images;
pub mod http_range;
pub mod page_inputs;
pub mod replay;
pub mod snapshot;

/// The fuzzer's bytes, read front to back as the values a harness needs.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes (fewer if fewer are left).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything not read yet.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0; 2];
        let got = self.bytes(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0; 4];
        let got = self.bytes(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A length of at most `max` taken from a byte or a word (so short lengths are common).
    pub fn length(&mut self, max: usize) -> usize {
        let n = if self.bool() {
            usize::from(self.u8())
        } else {
            usize::from(self.u16())
        };
        n.min(max)
    }

    /// An access size: 1, 2 or 4 bytes.
    pub fn size(&mut self) -> u8 {
        [1, 2, 4, 4][usize::from(self.u8() & 3)]
    }

    /// A string of at most `max` bytes (invalid UTF-8 replaced).
    pub fn string(&mut self, max: usize) -> String {
        let n = self.length(max);
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }
}
