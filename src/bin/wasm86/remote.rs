//! Disk images streamed over HTTP for the CLI (`--hda http://host:port/disk.img`).
//!
//! Opening probes the server with a ranged GET of the first chunk. A 206 answer gives the image
//! size (from `Content-Range`) and the image is streamed: the core's [`Stream`] says which byte
//! ranges the drives miss, and [`Remotes::service`], called by the run loop after every slice,
//! fetches them on one keep-alive connection per disk (neighbouring requests merged into one
//! GET), completes them and wakes the drives. A 200 answer means the server ignores `Range`:
//! the whole image is downloaded at once, with a warning.
//!
//! Fetching blocks the run loop. That is deliberate: the guest does not run while its disk is
//! being read, so in deterministic mode the network's speed cannot change what the guest sees
//! (its virtual time does not move during a fetch), and in real-time mode the pause is bounded
//! by the socket timeouts and the retry schedule. A failed fetch is retried after a growing
//! pause (250 ms, 500 ms, 1 s, ...); the number of attempts and the final give-up belong to the
//! core, which then fails the guest's read with a medium error.

use crate::http::{self, Client};
use std::time::{Duration, Instant};
use wasm86::block::ranged::{parse_content_range, retry_delay_ms, ContentRange};
use wasm86::block::BlockBackend;
use wasm86::block::{FetchRequest, Stream, StreamConfig, StreamStats};
use wasm86::machine::Machine;

/// Longest GET made by merging neighbouring requests.
const MAX_MERGED: u64 = 8 << 20;
/// Largest image downloaded whole from a server that ignores `Range` (it is held in memory).
const MAX_WHOLE: u64 = 4 << 30;

/// One streamed image.
pub struct RemoteDisk {
    /// The option that named it ("--hda"), for messages.
    what: &'static str,
    url: String,
    stream: Stream,
    client: Client,
    /// Requests taken from the core and not fetched yet (the run loop's deadline came first).
    queue: Vec<FetchRequest>,
    max_attempts: u32,
}

/// Counters of all streamed images together (for `--stats`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub stream: StreamStats,
    /// GETs sent, the probes included.
    pub http_requests: u64,
}

/// The streamed images of a machine.
pub struct Remotes {
    disks: Vec<RemoteDisk>,
    /// Each image's cache cap ([`StreamConfig::max_cached_bytes`]).
    max_cached_bytes: u64,
}

/// Print a message on stderr from the run loop: the terminal may be in raw mode, where a line
/// needs its carriage return.
fn note(msg: &str) {
    eprint!("\r\nwasm86: {msg}\r\n");
}

/// "64 MiB" and the like, for messages.
fn size_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

impl Remotes {
    /// No images yet; each opened later keeps at most `max_cached_bytes` of its chunks.
    pub fn new(max_cached_bytes: u64) -> Remotes {
        Remotes {
            disks: Vec::new(),
            max_cached_bytes,
        }
    }

    /// Whether any image is streamed.
    pub fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// Probe `url` (named by option `what`) and return the backend to give its drive.
    pub fn open(&mut self, what: &'static str, url: &str) -> Result<Box<dyn BlockBackend>, String> {
        let err = |e: String| format!("{what} {url}: {e}");
        let parsed = http::parse_url(url).map_err(err)?;
        let config = StreamConfig {
            max_cached_bytes: self.max_cached_bytes,
            ..StreamConfig::default()
        };
        let mut client = Client::new(parsed);
        let cs = config.chunk_size;
        let (resp, body) = client.get(Some((0, cs)), MAX_WHOLE).map_err(err)?;
        let stream = match resp.status {
            206 => {
                let Some(ContentRange { start, end, total }) =
                    resp.head.get("Content-Range").and_then(parse_content_range)
                else {
                    return Err(err(
                        "the server's 206 answer has no valid Content-Range".into()
                    ));
                };
                let Some(size) = total else {
                    return Err(err("the server does not say the image size".into()));
                };
                if start != 0 || body.len() as u64 != end {
                    return Err(err(format!(
                        "asked for bytes 0-{}, the server sent {} bytes as {start}-{}",
                        cs - 1,
                        body.len(),
                        end - 1
                    )));
                }
                let stream = Stream::new(size, config);
                // The probe's bytes are the first chunk: keep them.
                stream.preload(0, &body);
                stream
            }
            200 => {
                let size = body.len() as u64;
                eprintln!(
                    "wasm86: {what} {url}: the server ignores Range requests; \
                     downloading the whole image ({})",
                    size_text(size)
                );
                let stream = Stream::new(size, config);
                stream.preload(0, &body);
                stream
            }
            // The probe's range starts at 0: only an empty image cannot satisfy it.
            416 => return Err(err("the image is empty".into())),
            _ => return Err(err(resp.describe())),
        };
        if stream.stats().image_size == 0 {
            return Err(err("the image is empty".into()));
        }
        let backend = stream.backend();
        self.disks.push(RemoteDisk {
            what,
            url: url.to_string(),
            stream,
            client,
            queue: Vec::new(),
            max_attempts: config.max_attempts,
        });
        Ok(backend)
    }

    /// Fetch what the drives asked for and wake them. Returns early (leaving requests queued)
    /// once `deadline` has passed.
    pub fn service(&mut self, machine: &mut Machine, deadline: Option<Instant>) {
        let mut wake = false;
        for d in &mut self.disks {
            d.service(deadline);
            wake |= d.stream.take_wake();
        }
        if wake {
            machine.storage_wake();
        }
    }

    /// Counters summed over all streamed images.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for d in &self.disks {
            let s = d.stream.stats();
            t.stream.image_size += s.image_size;
            t.stream.bytes_fetched += s.bytes_fetched;
            t.stream.requests += s.requests;
            t.stream.retries += s.retries;
            t.stream.failed_requests += s.failed_requests;
            t.stream.cached_bytes += s.cached_bytes;
            t.stream.evicted_bytes += s.evicted_bytes;
            t.http_requests += d.client.requests;
        }
        t
    }
}

impl RemoteDisk {
    fn service(&mut self, deadline: Option<Instant>) {
        loop {
            self.queue.extend(self.stream.take_requests());
            if self.queue.is_empty() {
                return;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            // Retries wait first: the longest pause any of them asks for.
            let attempt = self.queue.iter().map(|r| r.attempt).max().unwrap_or(1);
            if attempt > 1 {
                let pause = Duration::from_millis(retry_delay_ms(attempt).into());
                let pause = match deadline {
                    Some(d) => pause.min(d.saturating_duration_since(Instant::now())),
                    None => pause,
                };
                std::thread::sleep(pause);
            }
            let mut batch = std::mem::take(&mut self.queue);
            batch.sort_by_key(|r| r.start);
            for group in merge(&batch) {
                self.fetch(group);
            }
        }
    }

    /// One GET for requests that lie end to end.
    fn fetch(&mut self, group: &[FetchRequest]) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return;
        };
        let (start, end) = (first.start, last.end);
        let result = self
            .client
            .get(Some((start, end)), end - start)
            .and_then(|(resp, body)| {
                let range = resp.head.get("Content-Range").and_then(parse_content_range);
                match (resp.status, range) {
                    (206, Some(r)) if r.start == start && r.end == end => {
                        if body.len() as u64 == end - start {
                            Ok(body)
                        } else {
                            Err(format!(
                                "{} bytes for a range of {}",
                                body.len(),
                                end - start
                            ))
                        }
                    }
                    (206, _) => Err("the server sent a different range".to_string()),
                    (200, _) => Err("the server ignored the Range request (HTTP 200)".into()),
                    _ => Err(resp.describe()),
                }
            });
        match result {
            Ok(body) => {
                for r in group {
                    let from = (r.start - start) as usize;
                    let to = (r.end - start) as usize;
                    self.stream.complete(r.id, &body[from..to]);
                }
            }
            Err(e) => {
                let attempt = group.iter().map(|r| r.attempt).max().unwrap_or(1);
                let what = if attempt >= self.max_attempts {
                    "giving up: the guest gets a read error".to_string()
                } else {
                    format!("retrying (attempt {attempt} of {})", self.max_attempts)
                };
                note(&format!(
                    "{} {}: reading bytes {start}-{} failed: {e}; {what}",
                    self.what,
                    self.url,
                    end - 1
                ));
                for r in group {
                    self.stream.fail(r.id, &e);
                }
            }
        }
    }
}

/// Split requests sorted by start into runs that lie end to end (each at most [`MAX_MERGED`]
/// bytes, except a single longer request).
fn merge(sorted: &[FetchRequest]) -> Vec<&[FetchRequest]> {
    let mut groups = Vec::new();
    let mut begin = 0;
    for i in 1..=sorted.len() {
        let joins = i < sorted.len()
            && sorted[i].start == sorted[i - 1].end
            && sorted[i].end - sorted[begin].start <= MAX_MERGED;
        if !joins {
            groups.push(&sorted[begin..i]);
            begin = i;
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64, start: u64, end: u64) -> FetchRequest {
        FetchRequest {
            id,
            start,
            end,
            attempt: 1,
        }
    }

    #[test]
    fn neighbouring_requests_merge_up_to_a_limit() {
        let mib = 1 << 20;
        let reqs = [
            req(1, 0, 4 * mib),
            req(2, 4 * mib, 8 * mib),
            req(3, 8 * mib, 9 * mib),
            req(4, 10 * mib, 11 * mib),
            req(5, 11 * mib, 12 * mib),
        ];
        let ids: Vec<Vec<u64>> = merge(&reqs)
            .iter()
            .map(|g| g.iter().map(|r| r.id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 2], vec![3], vec![4, 5]]);
        assert!(merge(&[]).is_empty());
    }
}
