//! A streamed image: a block backend whose bytes arrive later, in fixed-size chunks, from a host
//! that fetches them (HTTP `Range` requests in the browser and in the CLI).
//!
//! The core decides *what* to fetch and the host decides *how*: a drive read that touches
//! missing chunks answers [`ReadStatus::Pending`] and queues [`FetchRequest`]s (neighbouring
//! misses merged into one range, plus read-ahead when the guest reads sequentially). The host
//! takes them with [`Stream::take_requests`], fetches each byte range and answers
//! [`Stream::complete`] or [`Stream::fail`]; then, when [`Stream::take_wake`] says so, it calls
//! [`crate::machine::Machine::storage_wake`] and the drive asks again.
//!
//! A failed fetch is re-queued (the host waits before retrying) until
//! [`StreamConfig::max_attempts`] attempts have failed; then the read that needed those bytes
//! fails with [`BlockError::Io`], which the guest sees as a medium error. The failed chunks go
//! back to "missing", so a guest that retries the command makes the host try again, as a disk
//! that recovers a marginal sector would. Nothing waits forever on the core's side: every
//! request ends in data or in an error the guest sees.
//!
//! Fetched chunks are kept in memory up to [`StreamConfig::max_cached_bytes`]; beyond it the
//! least recently used are dropped and fetched again if the guest reads them again (the image
//! is read-only, so a dropped chunk is never dirty: guest writes go to the copy-on-write
//! [`super::Overlay`] above this backend).

use super::{BlockBackend, BlockError, ReadStatus};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// How a stream fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Bytes per chunk: the unit of fetching and caching.
    pub chunk_size: u64,
    /// Chunks fetched beyond a sequential read.
    pub readahead_chunks: u64,
    /// Longest merged request, in chunks.
    pub max_request_chunks: u64,
    /// Attempts per request before the read fails (at least 1).
    pub max_attempts: u32,
    /// The most bytes of fetched chunks kept; the least recently used are dropped beyond it.
    /// Raised, if smaller, to what a few of the largest reads and requests need at once
    /// ([`StreamConfig::min_cache_bytes`]), so that the chunks of a read are never dropped
    /// before it completes.
    pub max_cached_bytes: u64,
}

/// The default cache cap: 256 MiB, sized for a page (whose wasm memory also holds the guest's
/// RAM, typically 128 MiB) and ample for the bundled images.
pub const DEFAULT_MAX_CACHED_BYTES: u64 = 256 << 20;

impl StreamConfig {
    /// The smallest cache that holds a read of the longest request and its read-ahead, four
    /// times over.
    pub fn min_cache_bytes(&self) -> u64 {
        (self.max_request_chunks + self.readahead_chunks)
            .saturating_mul(self.chunk_size)
            .saturating_mul(4)
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            chunk_size: 256 * 1024,
            readahead_chunks: 4,
            max_request_chunks: 16,
            max_attempts: 4,
            max_cached_bytes: DEFAULT_MAX_CACHED_BYTES,
        }
    }
}

/// A byte range the host should fetch: `start..end` of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    /// Names the request in [`Stream::complete`] and [`Stream::fail`].
    pub id: u64,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// 1 for the first try, 2 for the first retry, and so on (the host backs off by it).
    pub attempt: u32,
}

/// What a stream has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// Size of the whole image in bytes.
    pub image_size: u64,
    /// Bytes that arrived from the host (fetched, including [`Stream::preload`]).
    pub bytes_fetched: u64,
    /// Requests handed to the host, retries included.
    pub requests: u64,
    /// Requests that failed and were queued again.
    pub retries: u64,
    /// Requests given up after [`StreamConfig::max_attempts`] failures.
    pub failed_requests: u64,
    /// Bytes held in the cache.
    pub cached_bytes: u64,
    /// Bytes dropped from the cache to stay within its cap (see
    /// [`StreamConfig::max_cached_bytes`]).
    pub evicted_bytes: u64,
}

/// One chunk of the image that is not missing (see [`Inner::chunks`]).
#[derive(Debug)]
enum Chunk {
    /// A request for it is queued or with the host.
    InFlight,
    Present(Box<[u8]>),
    /// Its request was given up; the next read reports `reason` once.
    Failed(String),
}

/// A request the core made: chunks `first..last`.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    first: u64,
    last: u64,
    attempt: u32,
}

#[derive(Debug)]
struct Inner {
    size: u64,
    config: StreamConfig,
    /// The chunks that are not missing, by index. Sparse: the image size comes from a server
    /// (a Content-Range total), and a table with an entry per chunk of an image it claims to
    /// be petabytes long would not fit in memory.
    chunks: BTreeMap<u64, Chunk>,
    /// The present chunks by when they were last stored or read (a use count), oldest
    /// first, and each present chunk's entry there: the eviction order.
    by_use: BTreeMap<u64, u64>,
    last_use: BTreeMap<u64, u64>,
    uses: u64,
    /// Requests not yet taken by the host.
    queue: Vec<FetchRequest>,
    /// Requests made and not answered (queued or with the host), by id.
    outstanding: BTreeMap<u64, Outstanding>,
    next_id: u64,
    /// Where the last read ended (sequential-access detection).
    last_read_end: Option<u64>,
    wake: bool,
    stats: StreamStats,
}

/// A streamed image; clones share one state (the drive's backend and the host's handle).
#[derive(Clone, Debug)]
pub struct Stream(Rc<RefCell<Inner>>);

impl Stream {
    /// A stream over an image of `image_size` bytes with nothing fetched yet.
    pub fn new(image_size: u64, config: StreamConfig) -> Stream {
        let config = StreamConfig {
            chunk_size: config.chunk_size.max(512),
            max_request_chunks: config.max_request_chunks.max(1),
            max_attempts: config.max_attempts.max(1),
            ..config
        };
        let config = StreamConfig {
            max_cached_bytes: config.max_cached_bytes.max(config.min_cache_bytes()),
            ..config
        };
        Stream(Rc::new(RefCell::new(Inner {
            size: image_size,
            config,
            chunks: BTreeMap::new(),
            by_use: BTreeMap::new(),
            last_use: BTreeMap::new(),
            uses: 0,
            queue: Vec::new(),
            outstanding: BTreeMap::new(),
            next_id: 1,
            last_read_end: None,
            wake: false,
            stats: StreamStats {
                image_size,
                ..StreamStats::default()
            },
        })))
    }

    /// The backend to give a drive (it shares this stream's state).
    pub fn backend(&self) -> Box<dyn BlockBackend> {
        Box::new(self.clone())
    }

    /// The requests the host should start now (new ones and retries), oldest first.
    pub fn take_requests(&self) -> Vec<FetchRequest> {
        let mut s = self.0.borrow_mut();
        let taken = std::mem::take(&mut s.queue);
        s.stats.requests += taken.len() as u64;
        taken
    }

    /// The bytes of request `id` arrived. A response of the wrong length counts as a failure.
    /// Unknown ids (answered twice, or from before a failure was final) are ignored.
    pub fn complete(&self, id: u64, data: &[u8]) {
        let mut s = self.0.borrow_mut();
        let Some(&req) = s.outstanding.get(&id) else {
            return;
        };
        let (start, end) = s.byte_range(req.first, req.last);
        if data.len() as u64 != end - start {
            drop(s);
            self.fail(
                id,
                &format!(
                    "expected {} bytes at {start}, the server sent {}",
                    end - start,
                    data.len()
                ),
            );
            return;
        }
        s.outstanding.remove(&id);
        s.stats.bytes_fetched += data.len() as u64;
        s.store(start, data);
        s.wake = true;
    }

    /// Request `id` failed. It is queued again until it has failed
    /// [`StreamConfig::max_attempts`] times; then the reads waiting for it fail with `reason`.
    pub fn fail(&self, id: u64, reason: &str) {
        let mut s = self.0.borrow_mut();
        let Some(mut req) = s.outstanding.remove(&id) else {
            return;
        };
        if req.attempt < s.config.max_attempts {
            req.attempt += 1;
            s.stats.retries += 1;
            s.enqueue(req);
        } else {
            s.stats.failed_requests += 1;
            let why = format!("{reason} (after {} attempts)", req.attempt);
            for c in req.first..req.last {
                if let Some(chunk) = s.chunks.get_mut(&c) {
                    if matches!(chunk, Chunk::InFlight) {
                        *chunk = Chunk::Failed(why.clone());
                    }
                }
            }
            s.wake = true;
        }
    }

    /// Bytes the host has without a request (the probe's answer, or a whole image from a server
    /// that ignores `Range`): the chunks `data` covers completely are stored and count as fetched.
    pub fn preload(&self, offset: u64, data: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.stats.bytes_fetched += data.len() as u64;
        s.store(offset, data);
        s.wake = true;
    }

    /// True once after data arrived or a request was given up: the host then calls
    /// [`crate::machine::Machine::storage_wake`].
    pub fn take_wake(&self) -> bool {
        std::mem::take(&mut self.0.borrow_mut().wake)
    }

    /// Whether requests are queued or with the host.
    pub fn pending(&self) -> bool {
        !self.0.borrow().outstanding.is_empty()
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.0.borrow().stats
    }
}

impl Inner {
    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.config.chunk_size)
    }

    fn is_missing(&self, c: u64) -> bool {
        !self.chunks.contains_key(&c)
    }

    /// Bytes of chunks `first..last`. The end saturates: the last chunk of an image within a
    /// chunk of 2^64 bytes ends past what a u64 counts (and is cut at the image's end anyway).
    fn byte_range(&self, first: u64, last: u64) -> (u64, u64) {
        let cs = self.config.chunk_size;
        (
            first.saturating_mul(cs).min(self.size),
            last.saturating_mul(cs).min(self.size),
        )
    }

    /// Store the chunks `data` (at byte `offset`) covers completely; the last chunk of the image
    /// may be short.
    fn store(&mut self, offset: u64, data: &[u8]) {
        let cs = self.config.chunk_size;
        let end = offset.saturating_add(data.len() as u64).min(self.size);
        let mut c = offset.div_ceil(cs);
        while c < self.chunk_count() {
            let (start, stop) = self.byte_range(c, c + 1);
            if stop > end {
                break;
            }
            let bytes = &data[(start - offset) as usize..(stop - offset) as usize];
            if !matches!(self.chunks.get(&c), Some(Chunk::Present(_))) {
                self.chunks.insert(c, Chunk::Present(bytes.into()));
                self.stats.cached_bytes += bytes.len() as u64;
            }
            self.touch(c);
            c += 1;
        }
        self.evict();
    }

    /// Chunk `c` (present) was just stored or read.
    fn touch(&mut self, c: u64) {
        if let Some(old) = self.last_use.insert(c, self.uses) {
            self.by_use.remove(&old);
        }
        self.by_use.insert(self.uses, c);
        self.uses += 1;
    }

    /// Drop the least recently used chunks while the cache holds more than its cap. The
    /// chunks just stored are the most recent, and the cap holds several of the largest reads
    /// (see [`StreamConfig::min_cache_bytes`]), so a read waiting for them finds them.
    fn evict(&mut self) {
        while self.stats.cached_bytes > self.config.max_cached_bytes {
            let Some((_, c)) = self.by_use.pop_first() else {
                break;
            };
            self.last_use.remove(&c);
            if let Some(Chunk::Present(data)) = self.chunks.remove(&c) {
                self.stats.cached_bytes -= data.len() as u64;
                self.stats.evicted_bytes += data.len() as u64;
            }
        }
    }

    fn enqueue(&mut self, req: Outstanding) {
        let id = self.next_id;
        self.next_id += 1;
        let (start, end) = self.byte_range(req.first, req.last);
        self.outstanding.insert(id, req);
        self.queue.push(FetchRequest {
            id,
            start,
            end,
            attempt: req.attempt,
        });
    }

    /// Request the missing chunks among `first..last`, neighbours merged, each request at most
    /// `max_request_chunks` long.
    fn request_missing(&mut self, first: u64, last: u64) {
        let last = last.min(self.chunk_count());
        let mut c = first;
        while c < last {
            if !self.is_missing(c) {
                c += 1;
                continue;
            }
            let run_start = c;
            while c < last && c - run_start < self.config.max_request_chunks && self.is_missing(c) {
                self.chunks.insert(c, Chunk::InFlight);
                c += 1;
            }
            self.enqueue(Outstanding {
                first: run_start,
                last: c,
                attempt: 1,
            });
        }
    }
}

impl BlockBackend for Stream {
    fn len(&self) -> u64 {
        self.0.borrow().size
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadStatus, BlockError> {
        let mut s = self.0.borrow_mut();
        // checked, not saturating: a read that would run past 2^64 is past the end of every
        // image, even one whose server says it is u64::MAX bytes long.
        let Some(end) = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= s.size)
        else {
            return Err(BlockError::OutOfRange {
                offset,
                len: buf.len(),
            });
        };
        if buf.is_empty() {
            return Ok(ReadStatus::Ready);
        }
        let cs = s.config.chunk_size;
        let (first, last) = (offset / cs, end.div_ceil(cs));

        // A chunk whose fetch was given up fails this read once; it is missing again afterwards,
        // so the guest's retry fetches anew.
        for c in first..last {
            if let Some(Chunk::Failed(why)) = s.chunks.get(&c) {
                let err = BlockError::Io(why.clone());
                s.chunks.remove(&c);
                return Err(err);
            }
        }

        // Sequential reading: fetch ahead of the guest, whether or not this read waits.
        let sequential = s.last_read_end == Some(offset);
        let ahead = if sequential {
            s.config.readahead_chunks
        } else {
            0
        };
        s.request_missing(first, last + ahead);

        if (first..last).any(|c| !matches!(s.chunks.get(&c), Some(Chunk::Present(_)))) {
            return Ok(ReadStatus::Pending);
        }
        for c in first..last {
            let Some(Chunk::Present(data)) = s.chunks.get(&c) else {
                unreachable!("checked above: every chunk in range is present");
            };
            let chunk_start = c * cs;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + data.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - chunk_start) as usize..(to - chunk_start) as usize]);
        }
        for c in first..last {
            s.touch(c);
        }
        s.last_read_end = Some(end);
        Ok(ReadStatus::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn config() -> StreamConfig {
        StreamConfig {
            chunk_size: 1024,
            readahead_chunks: 2,
            max_request_chunks: 3,
            max_attempts: 3,
            max_cached_bytes: u64::MAX,
        }
    }

    /// Serve every queued request from `img`; returns how many were served.
    fn serve(stream: &Stream, img: &[u8]) -> usize {
        let reqs = stream.take_requests();
        for r in &reqs {
            stream.complete(r.id, &img[r.start as usize..r.end as usize]);
        }
        reqs.len()
    }

    /// A server may claim any size (fuzz/, http_range): a stream over an image of almost 2^64
    /// bytes is made without a table per chunk, and its last chunk, which ends where a u64
    /// overflows, is requested up to the image's end and served.
    #[test]
    fn an_image_of_almost_two_to_the_64_bytes_streams_its_last_chunk() {
        let size = u64::MAX - 100;
        let stream = Stream::new(size, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 50];
        assert_eq!(backend.read(size - 50, &mut buf), Ok(ReadStatus::Pending));
        let reqs = stream.take_requests();
        let last_chunk = size / 1024 * 1024;
        assert_eq!(
            reqs,
            vec![FetchRequest {
                id: 1,
                start: last_chunk,
                end: size,
                attempt: 1
            }]
        );
        let tail: Vec<u8> = (0..size - last_chunk).map(|i| i as u8).collect();
        stream.complete(1, &tail);
        assert_eq!(backend.read(size - 50, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(buf, tail[tail.len() - 50..]);
        assert_eq!(stream.stats().cached_bytes, tail.len() as u64);
    }

    /// A read that would end past 2^64 is out of range even in an image of u64::MAX bytes
    /// (the end once saturated to the image's size and the read "succeeded" short).
    #[test]
    fn a_read_past_two_to_the_64_is_out_of_range() {
        let stream = Stream::new(u64::MAX, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 100];
        assert_eq!(
            backend.read(u64::MAX - 10, &mut buf),
            Err(BlockError::OutOfRange {
                offset: u64::MAX - 10,
                len: 100
            })
        );
        assert!(stream.take_requests().is_empty());
        assert_eq!(
            backend.read(u64::MAX - 100, &mut buf),
            Ok(ReadStatus::Pending)
        );
    }

    #[test]
    fn a_miss_is_pending_until_the_chunk_arrives() {
        let img = image(10 * 1024 + 100);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 512];
        assert_eq!(backend.read(1536, &mut buf), Ok(ReadStatus::Pending));
        let reqs = stream.take_requests();
        assert_eq!(
            reqs,
            vec![FetchRequest {
                id: 1,
                start: 1024,
                end: 2048,
                attempt: 1
            }]
        );
        // Asking again before the answer does not request twice.
        assert_eq!(backend.read(1536, &mut buf), Ok(ReadStatus::Pending));
        assert!(stream.take_requests().is_empty());
        assert!(stream.pending());
        stream.complete(1, &img[1024..2048]);
        assert!(stream.take_wake());
        assert!(!stream.take_wake());
        assert_eq!(backend.read(1536, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(buf, &img[1536..2048]);
        assert!(!stream.pending());
        let st = stream.stats();
        assert_eq!(
            (st.bytes_fetched, st.requests, st.cached_bytes),
            (1024, 1, 1024)
        );
    }

    #[test]
    fn neighbouring_misses_merge_and_long_runs_split() {
        let img = image(16 * 1024);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        // Chunk 2 is already here: a read of chunks 0..8 asks for 0..2, 3..6 and 6..8.
        stream.preload(2048, &img[2048..3072]);
        let mut buf = vec![0; 8 * 1024];
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        let ranges: Vec<_> = stream
            .take_requests()
            .iter()
            .map(|r| (r.start, r.end))
            .collect();
        assert_eq!(ranges, vec![(0, 2048), (3072, 6144), (6144, 8192)]);
    }

    #[test]
    fn sequential_reads_fetch_ahead_and_random_reads_do_not() {
        let img = image(32 * 1024);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 1024];
        // A first read: no read-ahead.
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        assert_eq!(serve(&stream, &img), 1);
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Ready));
        // The next one continues where it ended: chunk 1 plus two chunks ahead, in one request.
        assert_eq!(backend.read(1024, &mut buf), Ok(ReadStatus::Pending));
        let reqs = stream.take_requests();
        assert_eq!((reqs[0].start, reqs[0].end), (1024, 4096));
        for r in &reqs {
            stream.complete(r.id, &img[r.start as usize..r.end as usize]);
        }
        assert_eq!(backend.read(1024, &mut buf), Ok(ReadStatus::Ready));
        // Reading on from the cache keeps the read-ahead window filled.
        assert_eq!(backend.read(2048, &mut buf), Ok(ReadStatus::Ready));
        let reqs = stream.take_requests();
        assert_eq!((reqs[0].start, reqs[0].end), (4096, 5120));
        assert_eq!(buf, &img[2048..3072]);
        // A jump elsewhere fetches only what it needs.
        serve(&stream, &img);
        assert_eq!(backend.read(20 * 1024, &mut buf), Ok(ReadStatus::Pending));
        let reqs = stream.take_requests();
        assert_eq!((reqs[0].start, reqs[0].end), (20 * 1024, 21 * 1024));
    }

    #[test]
    fn the_short_last_chunk_and_reads_past_the_end() {
        let img = image(2 * 1024 + 10);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 10];
        assert_eq!(backend.read(2048, &mut buf), Ok(ReadStatus::Pending));
        let reqs = stream.take_requests();
        assert_eq!((reqs[0].start, reqs[0].end), (2048, 2058));
        serve_list(&stream, &img, &reqs);
        assert_eq!(backend.read(2048, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(buf, &img[2048..]);
        assert!(matches!(
            backend.read(2050, &mut buf),
            Err(BlockError::OutOfRange { .. })
        ));
    }

    fn serve_list(stream: &Stream, img: &[u8], reqs: &[FetchRequest]) {
        for r in reqs {
            stream.complete(r.id, &img[r.start as usize..r.end as usize]);
        }
    }

    #[test]
    fn failures_retry_then_fail_the_read_once() {
        let img = image(4 * 1024);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 512];
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        for attempt in 1..=3 {
            let reqs = stream.take_requests();
            assert_eq!(reqs.len(), 1);
            assert_eq!(reqs[0].attempt, attempt);
            stream.fail(reqs[0].id, "HTTP 503");
            // Still waiting while retries remain.
            if attempt < 3 {
                assert!(!stream.take_wake());
                assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
            }
        }
        assert!(stream.take_wake());
        assert_eq!(
            backend.read(0, &mut buf),
            Err(BlockError::Io("HTTP 503 (after 3 attempts)".into()))
        );
        let st = stream.stats();
        assert_eq!((st.requests, st.retries, st.failed_requests), (3, 2, 1));
        // The guest retries the command: a fresh fetch, and this time it works.
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        assert_eq!(serve(&stream, &img), 1);
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(buf, &img[..512]);
    }

    #[test]
    fn a_short_or_late_response_is_not_trusted() {
        let img = image(4 * 1024);
        let stream = Stream::new(img.len() as u64, config());
        let mut backend = stream.backend();
        let mut buf = vec![0; 512];
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        let r = stream.take_requests()[0];
        stream.complete(r.id, &img[..100]);
        let retry = stream.take_requests();
        assert_eq!(retry[0].attempt, 2);
        // The first id is no longer valid: its late answer is dropped.
        stream.complete(r.id, &img[..1024]);
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Pending));
        stream.complete(retry[0].id, &img[..1024]);
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(stream.stats().bytes_fetched, 1024);
    }

    #[test]
    fn a_whole_preloaded_image_needs_no_requests() {
        let img = image(5000);
        let stream = Stream::new(img.len() as u64, config());
        stream.preload(0, &img);
        let mut backend = stream.backend();
        let mut buf = vec![0; 5000];
        assert_eq!(backend.read(0, &mut buf), Ok(ReadStatus::Ready));
        assert_eq!(buf, img);
        assert!(stream.take_requests().is_empty());
        assert_eq!(stream.stats().cached_bytes, 5000);
    }

    /// An image four times larger than the cache, read whole twice in sequence as a guest
    /// reads a disk: every byte is right both times, the cache never holds more than its cap,
    /// and the second pass fetches again what was dropped.
    #[test]
    fn an_image_larger_than_the_cache_cap_is_read_twice_within_the_cap() {
        let cfg = StreamConfig {
            max_cached_bytes: 0,
            ..config()
        };
        let cap = cfg.min_cache_bytes();
        let img = image(4 * cap as usize + 700);
        let stream = Stream::new(img.len() as u64, cfg);
        let mut backend = stream.backend();
        let mut fetched_after_first_pass = 0;
        for pass in 0..2 {
            let mut offset = 0;
            while offset < img.len() {
                let len = 1536.min(img.len() - offset);
                let mut buf = vec![0; len];
                let mut tries = 0;
                while backend.read(offset as u64, &mut buf) == Ok(ReadStatus::Pending) {
                    assert!(serve(&stream, &img) > 0, "a pending read queued no request");
                    tries += 1;
                    assert!(tries < 4, "the read at {offset} never completed");
                }
                assert_eq!(
                    buf,
                    &img[offset..offset + len],
                    "pass {pass}, offset {offset}"
                );
                let stats = stream.stats();
                assert!(
                    stats.cached_bytes <= cap,
                    "{} bytes cached, cap {cap}",
                    stats.cached_bytes
                );
                offset += len;
            }
            if pass == 0 {
                fetched_after_first_pass = stream.stats().bytes_fetched;
            }
        }
        let stats = stream.stats();
        assert!(stats.evicted_bytes >= 3 * cap, "{stats:?}");
        assert!(
            stats.bytes_fetched >= fetched_after_first_pass + 3 * cap,
            "the second pass fetched again what was dropped: {stats:?}"
        );
    }
}
