//! Fetching a model's files by URL in the browser, with download progress, kept in Cache Storage so a
//! second load of the same URL needs no network.

use std::collections::HashMap;

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, Cache, ReadableStreamDefaultReader, RequestInit, Response};

use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::io::source::{ModelFiles, SENTENCE_CONFIG, WeightsDtype, sentence_modules};

const CACHE_NAME: &str = "webbert-models-v1";
/// What a load measured about this browser's devices (see `wasm::Model::load`), by key.
const MEASUREMENTS: &str = "webbert-measurements-v1";

fn js_error(context: &str, e: JsValue) -> Error {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    Error::Io(format!("{context}: {detail}"))
}

async fn call(promise: JsValue, context: &str) -> Result<JsValue> {
    let promise = promise
        .dyn_into::<js_sys::Promise>()
        .map_err(|e| js_error(context, e))?;
    JsFuture::from(promise)
        .await
        .map_err(|e| js_error(context, e))
}

/// `fetch` and `caches` from whichever global this runs in (window or worker).
fn global_method(name: &str) -> Result<(JsValue, Function)> {
    let global: JsValue = js_sys::global().into();
    let method = Reflect::get(&global, &name.into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok());
    method
        .map(|m| (global, m))
        .ok_or_else(|| Error::Io(format!("this environment has no {name}()")))
}

async fn open_cache() -> Option<Cache> {
    open_named_cache(CACHE_NAME).await
}

async fn open_named_cache(name: &str) -> Option<Cache> {
    let global: JsValue = js_sys::global().into();
    let caches = Reflect::get(&global, &"caches".into())
        .ok()
        .filter(|c| !c.is_undefined())?;
    let open = Reflect::get(&caches, &"open".into())
        .ok()?
        .dyn_into::<Function>()
        .ok()?;
    call(open.call1(&caches, &name.into()).ok()?, "caches.open")
        .await
        .ok()?
        .dyn_into()
        .ok()
}

fn measurement_url(key: &str) -> String {
    format!(
        "https://webbert.invalid/measurements/{}",
        js_sys::encode_uri_component(key)
    )
}

/// A value stored by [`remember`] under `key`, if Cache Storage has it.
pub async fn remembered(key: &str) -> Option<String> {
    let cache = open_named_cache(MEASUREMENTS).await?;
    let hit = call(
        cache.match_with_str(&measurement_url(key)).into(),
        "cache lookup",
    )
    .await
    .ok()
    .filter(|r| !r.is_undefined())?;
    let response: Response = hit.dyn_into().ok()?;
    call(response.text().ok()?.into(), "cache read")
        .await
        .ok()?
        .as_string()
}

/// Keeps `value` under `key` in Cache Storage (best effort: without it, the next load measures again).
pub async fn remember(key: &str, value: &str) {
    let Some(cache) = open_named_cache(MEASUREMENTS).await else {
        return;
    };
    if let Ok(response) = Response::new_with_opt_str(Some(value)) {
        let put = cache.put_with_str(&measurement_url(key), &response);
        let _ = call(put.into(), "cache put").await;
    }
}

/// A download that receives nothing for this long fails, unless the load asks for another limit.
pub const STALL_MS: u32 = 30_000;
/// The largest file a load accepts: the weights and their copy on the device must fit beside it in
/// WebAssembly's 4 GiB.
const MAX_FILE_BYTES: f64 = (2u64 << 30) as f64;

/// How one load fetches: where it caches, whom it tells of progress, how long a stall may last.
struct Fetcher<'a> {
    base: &'a str,
    cache: Option<&'a Cache>,
    progress: Option<&'a Function>,
    stall_ms: u32,
    /// Aborts the load's requests when one stalls.
    controller: Option<AbortController>,
}

/// A fetched file, and the response to keep in Cache Storage once the whole model is found valid.
struct Fetched {
    /// `None`: the server has no such file (404), an optional file's absence.
    bytes: Option<Vec<u8>>,
    to_cache: Option<(String, Response)>,
}

/// `global[name](...args)`.
fn call_global(name: &str, args: &Array) -> Result<JsValue> {
    let (global, method) = global_method(name)?;
    method.apply(&global, args).map_err(|e| js_error(name, e))
}

impl Fetcher<'_> {
    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base.trim_end_matches('/'))
    }

    /// `promise`'s value, or an error naming `url` once `stall_ms` pass without it settling.
    async fn within(&self, promise: JsValue, url: &str, context: &str) -> Result<JsValue> {
        const STALLED: &str = "webbert: stalled";
        let promise: Promise = promise.dyn_into().map_err(|e| js_error(context, e))?;
        let mut timer = Ok(JsValue::UNDEFINED);
        let timeout = Promise::new(&mut |_, reject| {
            let args = Array::of3(&reject, &self.stall_ms.into(), &STALLED.into());
            timer = call_global("setTimeout", &args);
        });
        let timer = timer?;
        let result = JsFuture::from(Promise::race(&Array::of2(&promise, &timeout))).await;
        let _ = call_global("clearTimeout", &Array::of1(&timer));
        match result {
            Ok(value) => Ok(value),
            Err(e) if e.as_string().as_deref() == Some(STALLED) => {
                if let Some(controller) = &self.controller {
                    controller.abort();
                }
                Err(Error::Io(format!(
                    "{url}: no data for {} s; the download stalled",
                    self.stall_ms as f64 / 1e3
                )))
            }
            Err(e) => Err(js_error(context, e)),
        }
    }

    async fn cached(&self, url: &str) -> Option<JsValue> {
        let cache = self.cache?;
        call(cache.match_with_str(url).into(), "cache lookup")
            .await
            .ok()
            .filter(|r| !r.is_undefined())
    }

    /// Drops `names` from the cache because their contents were refused (`error`): copies an earlier
    /// load kept (a new download enters the cache only once the model is found valid), so that a fixed
    /// server is fetched again rather than a bad copy kept forever; returns `error`.
    async fn forget(&self, names: &[String], error: Error) -> Error {
        if let Some(cache) = self.cache {
            for name in names {
                let url = self.url(name);
                let _ = call(cache.delete_with_str(&url).into(), "cache delete").await;
            }
        }
        error
    }

    /// Whether the cache holds `name` itself (not a remembered 404).
    async fn is_cached(&self, name: &str) -> bool {
        let hit = self.cached(&self.url(name)).await;
        hit.and_then(|r| r.dyn_into::<Response>().ok())
            .is_some_and(|r| r.ok())
    }

    /// Fetches `name` (from the cache if it is there); no bytes on 404 (an optional file, whose absence
    /// is cached too, so that a second load asks nothing), an error for any other failure.
    async fn file(&self, name: &str) -> Result<Fetched> {
        let url = self.url(name);
        if let Some(hit) = self.cached(&url).await {
            let response: Response = hit.dyn_into().map_err(|e| js_error(&url, e))?;
            let bytes = match response.status() {
                404 => None,
                _ => Some(self.body(&url, name, response).await?),
            };
            return Ok(Fetched {
                bytes,
                to_cache: None,
            });
        }
        let context = format!("could not fetch {url}");
        let init = RequestInit::new();
        if let Some(controller) = &self.controller {
            init.set_signal(Some(&controller.signal()));
        }
        let request = call_global("fetch", &Array::of2(&url.clone().into(), &init.into()))?;
        let response: Response = self
            .within(request, &url, &context)
            .await?
            .dyn_into()
            .map_err(|e| js_error(&context, e))?;
        if response.status() == 404 {
            return Ok(Fetched {
                bytes: None,
                to_cache: self.cache.map(|_| (url, response)),
            });
        }
        if !response.ok() {
            return Err(Error::Io(format!(
                "{url}: HTTP {} {}",
                response.status(),
                response.status_text()
            )));
        }
        // The copy is kept for the cache while the body streams in (so progress is reported as bytes
        // arrive); it enters the cache only once the whole model is read and found valid.
        let copy = if self.cache.is_some() {
            response.clone().ok()
        } else {
            None
        };
        let bytes = self.body(&url, name, response).await?;
        Ok(Fetched {
            bytes: Some(bytes),
            to_cache: copy.map(|copy| (url, copy)),
        })
    }

    /// Reads the body chunk by chunk, reporting `{file, loaded, total}` after each.
    async fn body(&self, url: &str, name: &str, response: Response) -> Result<Vec<u8>> {
        let total: Option<f64> = response
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok());
        let too_big = || {
            Error::Io(format!(
                "{url} is larger than 2 GiB, more than WebAssembly's memory can hold beside the model"
            ))
        };
        if total.is_some_and(|t| t > MAX_FILE_BYTES) {
            return Err(too_big());
        }
        let body = response
            .body()
            .ok_or_else(|| Error::Io(format!("{url}: empty response")))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(total.unwrap_or(0.0) as usize)
            .map_err(|_| too_big())?;
        let context = format!("reading {url}");
        loop {
            let chunk = self.within(reader.read().into(), url, &context).await?;
            if Reflect::get(&chunk, &"done".into())
                .ok()
                .and_then(|d| d.as_bool())
                .unwrap_or(true)
            {
                break;
            }
            let value = Reflect::get(&chunk, &"value".into()).map_err(|e| js_error(url, e))?;
            // The stream's own chunk, copied straight into place: no temporary per chunk on a 90 MB download.
            let chunk: Uint8Array = value.dyn_into().map_err(|e| js_error(url, e))?;
            let start = bytes.len();
            let end = start + chunk.length() as usize;
            if end as f64 > MAX_FILE_BYTES {
                let _ = reader.cancel();
                return Err(too_big());
            }
            bytes.try_reserve(end - start).map_err(|_| too_big())?;
            bytes.resize(end, 0);
            chunk.copy_to(&mut bytes[start..]);
            if let Some(progress) = self.progress {
                let event = Object::new();
                let _ = Reflect::set(&event, &"file".into(), &name.into());
                let _ = Reflect::set(&event, &"loaded".into(), &(bytes.len() as f64).into());
                let _ = Reflect::set(
                    &event,
                    &"total".into(),
                    &total.map(JsValue::from).unwrap_or(JsValue::NULL),
                );
                let _ = progress.call1(&JsValue::NULL, &event);
            }
        }
        Ok(bytes)
    }

    /// Fetches each of `names` that the server has into `files`.
    async fn into(
        &self,
        files: &mut HashMap<String, Vec<u8>>,
        to_cache: &mut Vec<(String, Response)>,
        names: &[&str],
    ) -> Result<()> {
        for name in names {
            let fetched = self.file(name).await?;
            if let Some(bytes) = fetched.bytes {
                files.insert(name.to_string(), bytes);
            }
            to_cache.extend(fetched.to_cache);
        }
        Ok(())
    }
}

/// Downloads a model from a base URL in Hugging Face layout: the files `ModelFiles::from_lookup` would
/// ask for, fetched ahead because fetching is async. A request that receives nothing for `stall_ms`
/// fails with an error naming its file.
pub async fn fetch_model(
    base: &str,
    dtype: WeightsDtype,
    progress: Option<Function>,
    stall_ms: u32,
) -> Result<ModelFiles> {
    let cache = open_cache().await;
    let fetcher = Fetcher {
        base,
        cache: cache.as_ref(),
        progress: progress.as_ref(),
        stall_ms,
        controller: AbortController::new().ok(),
    };
    let mut files = HashMap::new();
    let mut to_cache = Vec::new();
    let found = fetch_files(&fetcher, dtype, &mut files, &mut to_cache).await;
    let fetched: Vec<String> = files.keys().cloned().collect();
    let refused = async |e| fetcher.forget(&fetched, e).await;
    match found {
        Err(e @ Error::Io(_)) => return Err(e),
        Err(e) => return Err(refused(e).await),
        Ok(()) => {}
    }
    match ModelFiles::from_lookup(dtype, |name| Ok(files.remove(name))) {
        Ok(model) => {
            if let Some(cache) = &cache {
                // Best effort: a full or unavailable cache only costs a later re-download.
                for (url, response) in to_cache {
                    let _ = call(cache.put_with_str(&url, &response).into(), "cache put").await;
                }
            }
            Ok(model)
        }
        Err(Error::Io(msg)) => Err(Error::Io(format!("{base}: {msg}"))),
        Err(e) => Err(refused(e).await),
    }
}

/// The files [`ModelFiles::from_lookup`] will ask for: only the weights `dtype` picks are downloaded.
async fn fetch_files(
    fetcher: &Fetcher<'_>,
    dtype: WeightsDtype,
    files: &mut HashMap<String, Vec<u8>>,
    to_cache: &mut Vec<(String, Response)>,
) -> Result<()> {
    fetcher
        .into(
            files,
            to_cache,
            &["config.json", "tokenizer.json", "modules.json"],
        )
        .await?;
    if let Some(modules) = files.get("modules.json") {
        let (pooling, _) = sentence_modules(modules)?;
        let pooling = pooling.map(|path| format!("{path}/config.json"));
        let names: Vec<&str> = pooling
            .iter()
            .map(String::as_str)
            .chain([SENTENCE_CONFIG])
            .collect();
        fetcher.into(files, to_cache, &names).await?;
    }
    if !files.contains_key("tokenizer.json") {
        fetcher
            .into(files, to_cache, &["vocab.txt", "tokenizer_config.json"])
            .await?;
    }
    // A variant already in the cache wins, so that a second load needs no network (not even to ask
    // for a smaller variant that is not there).
    let mut names = dtype.files().to_vec();
    for (i, name) in dtype.files().iter().enumerate() {
        if fetcher.is_cached(name).await {
            names.swap(0, i);
            break;
        }
    }
    for name in names {
        fetcher.into(files, to_cache, &[name]).await?;
        if files.contains_key(name) {
            return Ok(());
        }
    }
    if !dtype.is_variant() {
        fetcher
            .into(files, to_cache, &["model.safetensors.index.json"])
            .await?;
        if let Some(index) = files.get("model.safetensors.index.json") {
            let shards = Checkpoint::shard_names(&String::from_utf8_lossy(index))?;
            let shards: Vec<&str> = shards.iter().map(String::as_str).collect();
            fetcher.into(files, to_cache, &shards).await?;
        }
    }
    Ok(())
}

/// Lets the event loop run (a message from the page, say) before going on: between the batches of a
/// long call on the CPU, where nothing else would yield until the call ends.
pub async fn yield_to_events() {
    let Ok(channel) = web_sys::MessageChannel::new() else {
        return;
    };
    let promise = Promise::new(&mut |resolve, _| {
        channel.port1().set_onmessage(Some(&resolve));
    });
    if channel.port2().post_message(&JsValue::NULL).is_ok() {
        let _ = JsFuture::from(promise).await;
    }
    channel.port1().set_onmessage(None);
}
