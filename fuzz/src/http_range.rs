//! HTTP Range answers for streamed disks: the Content-Range parser, the judges of a probe's
//! and a chunk's answer (status, header, body length from the server), and a stream of any
//! image size and chunk configuration whose fetches the server answers with whatever the
//! input says (short bodies, long bodies, failures, answers to requests never made), read
//! through its block backend at any offset.

use super::Input;
use wasm86::block::ranged::{self, Probe};
use wasm86::block::ReadStatus;
use wasm86::block::{Stream, StreamConfig};

const MAX_STEPS: usize = 256;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let header = input.string(128);
    if let Some(cr) = ranged::parse_content_range(&header) {
        assert!(cr.start < cr.end, "{header:?} parsed to an empty range");
        if let Some(total) = cr.total {
            assert!(cr.end <= total, "{header:?}: a range past the end");
        }
    }
    let status = input.u16();
    let body_len = input.u64();
    let chunk = input.u64();
    let header = input.bool().then_some(header.as_str());
    if let Ok(Probe::Ranged { size }) =
        ranged::judge_probe("u", status, "", header, body_len, chunk)
    {
        assert!(body_len <= size, "a probe body larger than the image");
    }
    let (start, end) = (input.u64(), input.u64());
    if start < end {
        let _ = ranged::judge_chunk("u", status, "text", header, body_len, start, end);
    }
    let _ = ranged::status_line(status, &input.string(16));
    let _ = ranged::human_size(input.u64());
    let _ = ranged::name_from_url(&input.string(64));
    let _ = ranged::retry_delay_ms(input.u32());

    // A stream over an image of any size.
    let image_size = if input.bool() {
        input.u64()
    } else {
        u64::from(input.u32() % (1 << 20))
    };
    let config = StreamConfig {
        chunk_size: [512, 4096, 65536, 1, 3][usize::from(input.u8() % 5)],
        readahead_chunks: u64::from(input.u8() % 8),
        max_request_chunks: u64::from(input.u8() % 16),
        max_attempts: u32::from(input.u8() % 4),
        // The smallest cache the stream allows (see StreamConfig::min_cache_bytes), so chunks
        // are dropped and fetched again.
        max_cached_bytes: 0,
    };
    let stream = Stream::new(image_size, config);
    let mut backend = stream.backend();
    assert_eq!(backend.len(), image_size);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 5 {
            0 | 1 => {
                let offset = if input.bool() {
                    input.u64()
                } else {
                    u64::from(input.u32()) % image_size.max(1)
                };
                let mut buf = vec![0u8; input.length(1 << 16)];
                if let Ok(ReadStatus::Ready) = backend.read(offset, &mut buf) {
                    assert!(
                        offset
                            .checked_add(buf.len() as u64)
                            .is_some_and(|e| e <= image_size),
                        "a read past the end of the image succeeded"
                    );
                }
            }
            2 => {
                for r in stream.take_requests() {
                    assert!(r.start < r.end && r.end <= image_size, "request {r:?}");
                    let len = match input.u8() % 3 {
                        0 => (r.end - r.start).min(1 << 20) as usize,
                        1 => input.length(1 << 16),
                        _ => continue,
                    };
                    stream.complete(r.id, &vec![0xA5; len]);
                }
            }
            3 => {
                // Answers to requests the stream may never have made.
                let id = u64::from(input.u8());
                if input.bool() {
                    stream.fail(id, "gone");
                } else {
                    let len = input.length(1 << 16);
                    stream.complete(id, &vec![0x5A; len]);
                }
            }
            _ => {
                let offset = input.u64();
                let len = input.length(1 << 16);
                stream.preload(offset, &vec![0x11; len]);
            }
        }
        let _ = stream.take_wake();
        let _ = stream.pending();
        let _ = stream.stats();
    }
}
