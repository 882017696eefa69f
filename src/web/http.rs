//! Fetching over HTTP for streamed disks: one ranged GET, the probe that opens a disk, and the
//! futures that answer a [`Stream`]'s requests with retries.
//!
//! `fetch` and `setTimeout` are called as globals (bound below), so the same code runs in a
//! Window and in a dedicated Worker, whose global scopes both have them; nothing here needs a
//! `window` object.

use crate::block::ranged::{self as range, judge_chunk, retry_delay_ms};
use crate::block::{FetchRequest, Stream};
use js_sys::{Promise, Uint8Array};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{AbortController, Headers, Request, RequestInit, Response};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch` of the Window or Worker.
    #[wasm_bindgen(js_name = fetch, catch)]
    fn global_fetch(request: &Request) -> Result<Promise, JsValue>;

    /// The global `setTimeout`.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;
}

/// Messages for the page (warnings and final failures), shared by the machine and the fetches.
pub type Messages = Rc<RefCell<Vec<String>>>;

/// A response with its body read.
pub struct Fetched {
    pub status: u16,
    pub status_text: String,
    /// The `Content-Range` header, if the page may read it (CORS).
    pub content_range: Option<String>,
    pub body: Vec<u8>,
}

/// The text of a JS exception or rejection value.
pub fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Wait `ms` milliseconds (yielding to the event loop).
pub async fn sleep(ms: u32) {
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    let p = Promise::new(&mut |resolve, _reject| {
        set_timeout(&resolve, ms);
    });
    // A timer promise only resolves.
    let _ = JsFuture::from(p).await;
}

/// GET `url`, asking for bytes `range.0..range.1` when given. A body the server announces
/// (Content-Length) as longer than `max_body` is not read: the request is aborted and that is an
/// error. Network failures (including a cross-origin server that does not allow the page) are
/// errors naming the URL; HTTP error statuses are returned for the caller to judge, without
/// their bodies.
pub async fn get(url: &str, range: Option<(u64, u64)>, max_body: u64) -> Result<Fetched, String> {
    let network = |e: JsValue| {
        format!(
            "{url}: network error ({}): the server is unreachable or does not allow this page \
             to read it (CORS)",
            js_message(&e)
        )
    };
    let abort = AbortController::new().map_err(network)?;
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_signal(Some(&abort.signal()));
    if let Some((start, end)) = range {
        let headers = Headers::new().map_err(network)?;
        headers
            .set("Range", &format!("bytes={start}-{}", end.saturating_sub(1)))
            .map_err(network)?;
        init.set_headers(&headers);
    }
    let request = Request::new_with_str_and_init(url, &init)
        .map_err(|e| format!("{url}: not a usable URL ({})", js_message(&e)))?;
    let response: Response = JsFuture::from(global_fetch(&request).map_err(network)?)
        .await
        .map_err(network)?
        .dyn_into()
        .map_err(|_| format!("{url}: fetch did not return a Response"))?;
    let status = response.status();
    let status_text = response.status_text();
    let headers = response.headers();
    let content_range = headers.get("Content-Range").ok().flatten();
    let length = headers
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if !(200..300).contains(&status) {
        abort.abort();
        return Ok(Fetched {
            status,
            status_text,
            content_range,
            body: Vec::new(),
        });
    }
    if let Some(n) = length.filter(|&n| n > max_body) {
        abort.abort();
        return Err(format!(
            "{url}: the server sent {} where at most {} were expected",
            range::human_size(n),
            range::human_size(max_body)
        ));
    }
    let buf = JsFuture::from(response.array_buffer().map_err(network)?)
        .await
        .map_err(|e| format!("{url}: reading the response failed ({})", js_message(&e)))?;
    Ok(Fetched {
        status,
        status_text,
        content_range,
        body: Uint8Array::new(&buf).to_vec(),
    })
}

/// A streamed disk's connection to its server: answers the stream's requests.
pub struct Feed {
    /// "hda", "hdb" or "cdrom", for messages.
    pub label: &'static str,
    pub url: String,
    pub stream: Stream,
    /// Attempts after which the stream gives a request up (its configuration).
    pub max_attempts: u32,
    pub messages: Messages,
}

impl Feed {
    /// Start a fetch for every request the stream has queued. Each one, when it ends, starts
    /// whatever was queued meanwhile (its own retry included), so retries do not wait for the
    /// next `run()`.
    pub fn start(self: &Rc<Self>) {
        for req in self.stream.take_requests() {
            let feed = Rc::clone(self);
            spawn_local(async move {
                feed.fetch(req).await;
                feed.start();
            });
        }
    }

    async fn fetch(&self, req: FetchRequest) {
        let delay = retry_delay_ms(req.attempt);
        if delay > 0 {
            sleep(delay).await;
        }
        let result = match get(&self.url, Some((req.start, req.end)), req.end - req.start).await {
            Ok(r) => judge_chunk(
                &self.url,
                r.status,
                &r.status_text,
                r.content_range.as_deref(),
                r.body.len() as u64,
                req.start,
                req.end,
            )
            .map(|()| r.body),
            Err(e) => Err(e),
        };
        match result {
            Ok(body) => self.stream.complete(req.id, &body),
            Err(why) => {
                if req.attempt >= self.max_attempts {
                    self.messages.borrow_mut().push(format!(
                        "{}: read of bytes {}-{} failed after {} attempts: {why}",
                        self.label,
                        req.start,
                        req.end.saturating_sub(1),
                        req.attempt
                    ));
                }
                self.stream.fail(req.id, &why);
            }
        }
    }
}
