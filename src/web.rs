//! Fetching a model's files by URL in the browser, with download progress, kept in Cache Storage so a
//! second load of the same URL needs no network.

use std::collections::HashMap;

use js_sys::{Function, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response};

use crate::error::{Error, Result};
use crate::source::ModelFiles;
use crate::weights::Checkpoint;

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

/// Fetches `base/name`; `Ok(None)` on 404 (an optional file), an error for any other failure.
async fn fetch_file(
    base: &str,
    name: &str,
    cache: Option<&Cache>,
    progress: Option<&Function>,
) -> Result<Option<Vec<u8>>> {
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    let cached = match cache {
        Some(cache) => call(cache.match_with_str(&url).into(), "cache lookup")
            .await
            .ok()
            .filter(|r| !r.is_undefined()),
        None => None,
    };
    let response: Response = match cached {
        Some(hit) => hit.dyn_into().map_err(|e| js_error(&url, e))?,
        None => {
            let (global, fetch) = global_method("fetch")?;
            let context = format!("could not fetch {url}");
            let response: Response = call(
                fetch
                    .call1(&global, &url.clone().into())
                    .map_err(|e| js_error(&context, e))?,
                &context,
            )
            .await?
            .dyn_into()
            .map_err(|e| js_error(&context, e))?;
            if response.status() == 404 {
                return Ok(None);
            }
            if !response.ok() {
                return Err(Error::Io(format!(
                    "{url}: HTTP {} {}",
                    response.status(),
                    response.status_text()
                )));
            }
            if let Some(cache) = cache {
                // Best effort: a full or unavailable cache only costs a later re-download.
                if let Ok(copy) = response.clone() {
                    let _ = call(cache.put_with_str(&url, &copy).into(), "cache put").await;
                }
            }
            response
        }
    };
    read_body(&url, name, response, progress).await.map(Some)
}

/// Reads the body chunk by chunk, reporting `{file, loaded, total}` after each.
async fn read_body(
    url: &str,
    name: &str,
    response: Response,
    progress: Option<&Function>,
) -> Result<Vec<u8>> {
    let total: Option<f64> = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok());
    let body = response
        .body()
        .ok_or_else(|| Error::Io(format!("{url}: empty response")))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0.0).min(2e9) as usize);
    loop {
        let chunk = call(reader.read().into(), &format!("reading {url}")).await?;
        if Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(|e| js_error(url, e))?;
        // Copy the chunk straight into place: no temporary per chunk on a 90 MB download.
        let chunk = Uint8Array::new(&value);
        let start = bytes.len();
        bytes.resize(start + chunk.length() as usize, 0);
        chunk.copy_to(&mut bytes[start..]);
        if let Some(progress) = progress {
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
async fn fetch_into(
    files: &mut HashMap<String, Vec<u8>>,
    names: &[String],
    base: &str,
    cache: Option<&Cache>,
    progress: Option<&Function>,
) -> Result<()> {
    for name in names {
        if let Some(bytes) = fetch_file(base, name, cache, progress).await? {
            files.insert(name.clone(), bytes);
        }
    }
    Ok(())
}

/// Downloads a model from a base URL in Hugging Face layout: the files `ModelFiles::from_lookup` would
/// ask for, fetched ahead because fetching is async.
pub async fn fetch_model(base: &str, progress: Option<Function>) -> Result<ModelFiles> {
    let cache = open_cache().await;
    let (cache, progress) = (cache.as_ref(), progress.as_ref());
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut files = HashMap::new();
    fetch_into(
        &mut files,
        &names(&["config.json", "tokenizer.json", "model.safetensors"]),
        base,
        cache,
        progress,
    )
    .await?;
    if !files.contains_key("tokenizer.json") {
        fetch_into(
            &mut files,
            &names(&["vocab.txt", "tokenizer_config.json"]),
            base,
            cache,
            progress,
        )
        .await?;
    }
    if !files.contains_key("model.safetensors") {
        fetch_into(
            &mut files,
            &names(&["model.safetensors.index.json"]),
            base,
            cache,
            progress,
        )
        .await?;
        if let Some(index) = files.get("model.safetensors.index.json") {
            let shards = match Checkpoint::shard_names(&String::from_utf8_lossy(index)) {
                Ok(shards) => shards,
                Err(e) => return Err(forget(cache, base, files.keys(), e).await),
            };
            fetch_into(&mut files, &shards, base, cache, progress).await?;
        }
    }
    let fetched: Vec<String> = files.keys().cloned().collect();
    match ModelFiles::from_lookup(|name| Ok(files.remove(name))) {
        Ok(model) => Ok(model),
        Err(Error::Io(msg)) => Err(Error::Io(format!("{base}: {msg}"))),
        Err(e) => Err(forget(cache, base, fetched.iter(), e).await),
    }
}

/// Drops `names` from the cache because their contents were refused (`error`), so that a fixed server
/// is fetched again rather than the bad copy kept forever; returns `error`.
async fn forget<'n>(
    cache: Option<&Cache>,
    base: &str,
    names: impl Iterator<Item = &'n String>,
    error: Error,
) -> Error {
    if let Some(cache) = cache {
        for name in names {
            let url = format!("{}/{name}", base.trim_end_matches('/'));
            let _ = call(cache.delete_with_str(&url).into(), "cache delete").await;
        }
    }
    error
}
