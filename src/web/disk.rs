//! `Disk`: an image for a drive, from a URL (streamed in chunks when the server honours
//! `Range`, else downloaded whole) or from bytes the page already has (a dropped file).

use super::http::get;
use crate::block::ranged::{human_size, judge_probe, name_from_url, Probe};
use crate::block::{BlockBackend, MemBackend, Stream, StreamConfig};
use wasm_bindgen::prelude::*;

/// The most a server that ignores `Range` may send: the whole image is then held in memory.
pub const MAX_WHOLE_DOWNLOAD: u64 = 1 << 30;

/// Where a disk's bytes are.
pub(crate) enum Source {
    /// In memory; `downloaded` of them came over HTTP.
    Bytes { data: Vec<u8>, downloaded: u64 },
    /// Fetched in chunks as the guest reads.
    Streamed { stream: Stream, url: String },
}

/// A disk or CD image, ready to attach to a machine (which consumes it).
#[wasm_bindgen]
pub struct Disk {
    pub(crate) name: String,
    pub(crate) source: Source,
    pub(crate) warning: Option<String>,
}

/// How streamed disks fetch (the core's defaults: 256 KiB chunks, 4 attempts).
pub(crate) fn stream_config() -> StreamConfig {
    StreamConfig::default()
}

#[wasm_bindgen]
impl Disk {
    /// Open the image at `url`. The first chunk is fetched with a `Range` request: a 206
    /// answer makes a streamed disk (the rest is fetched as the guest reads it); a 200 answer
    /// means the server ignores ranges, so its body is the whole image, kept in memory, and
    /// `warning()` says so. A streamed disk keeps at most `max_cache_mib` MiB of fetched
    /// chunks in memory (default 256; raised, if smaller, to the few MiB one read needs):
    /// beyond it the least recently read are dropped and fetched again when read again.
    /// Rejects with an Error naming the URL for HTTP errors, network and CORS failures,
    /// unusable answers, and a `max_cache_mib` of 0.
    pub async fn open_url(url: String, max_cache_mib: Option<u32>) -> Result<Disk, JsError> {
        let mut config = stream_config();
        if let Some(mib) = max_cache_mib {
            if mib == 0 {
                return Err(JsError::new(&format!(
                    "{url}: a disk cache of 0 MiB cannot hold a read: give at least 1"
                )));
            }
            config.max_cached_bytes = u64::from(mib) << 20;
        }
        let chunk = config.chunk_size;
        let r = get(&url, Some((0, chunk)), MAX_WHOLE_DOWNLOAD)
            .await
            .map_err(|e| JsError::new(&e))?;
        let probe = judge_probe(
            &url,
            r.status,
            &r.status_text,
            r.content_range.as_deref(),
            r.body.len() as u64,
            chunk,
        )
        .map_err(|e| JsError::new(&e))?;
        let name = name_from_url(&url);
        match probe {
            Probe::Ranged { size } => {
                let stream = Stream::new(size, config);
                stream.preload(0, &r.body);
                Ok(Disk {
                    name,
                    source: Source::Streamed { stream, url },
                    warning: None,
                })
            }
            Probe::Whole => {
                let size = r.body.len() as u64;
                let warning = format!(
                    "{name}: the server ignores Range requests, so the whole image ({}) was \
                     downloaded",
                    human_size(size)
                );
                Ok(Disk {
                    name,
                    source: Source::Bytes {
                        data: r.body,
                        downloaded: size,
                    },
                    warning: Some(warning),
                })
            }
        }
    }

    /// An image the page already holds (a file chosen or dropped); `name` is for messages.
    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Disk {
        Disk {
            name,
            source: Source::Bytes {
                data: bytes,
                downloaded: 0,
            },
            warning: None,
        }
    }

    /// The image size in bytes.
    pub fn size(&self) -> f64 {
        match &self.source {
            Source::Bytes { data, .. } => data.len() as f64,
            Source::Streamed { stream, .. } => stream.len() as f64,
        }
    }

    /// Whether the image is fetched in chunks as it is read.
    pub fn streamed(&self) -> bool {
        matches!(self.source, Source::Streamed { .. })
    }

    /// Bytes that came over HTTP so far.
    pub fn bytes_fetched(&self) -> f64 {
        self.fetched() as f64
    }

    /// A note for the page (e.g. the server ignores Range requests), if any.
    pub fn warning(&self) -> Option<String> {
        self.warning.clone()
    }
}

impl Disk {
    /// Bytes that came over HTTP as a whole download (0 for a streamed disk, whose stream
    /// counts what it fetches).
    pub(crate) fn whole_download(&self) -> u64 {
        match &self.source {
            Source::Bytes { downloaded, .. } => *downloaded,
            Source::Streamed { .. } => 0,
        }
    }

    fn fetched(&self) -> u64 {
        match &self.source {
            Source::Bytes { downloaded, .. } => *downloaded,
            Source::Streamed { stream, .. } => stream.stats().bytes_fetched,
        }
    }

    /// The disk's name (file name or URL), for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Split a disk into the drive's backend and, for a streamed one, the handle the host keeps.
pub(crate) fn into_backend(source: Source) -> (Box<dyn BlockBackend>, Option<(Stream, String)>) {
    match source {
        Source::Bytes { data, .. } => (Box::new(MemBackend::new(data)), None),
        Source::Streamed { stream, url } => (stream.backend(), Some((stream, url))),
    }
}
