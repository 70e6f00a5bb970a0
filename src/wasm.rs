//! JavaScript bindings (wasm-bindgen). Thin: every call is one pipeline call; every failure rejects with
//! an `Error` whose message says what was wrong, and the instance stays usable.

use js_sys::{Array, Float32Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::heads::Pooling;
use crate::pipelines::{Embedder, FillMask};
use crate::source::ModelFiles;

unsafe extern "C" {
    /// wasm-ld's static constructors (cubecl registers its kernels with `inventory`). Unless the module calls
    /// it itself, wasm-ld re-runs every constructor at the top of every export: on WebGPU, where each
    /// promise callback enters the module, that cost seconds per forward pass.
    fn __wasm_call_ctors();
}

#[wasm_bindgen(start)]
fn start() {
    // SAFETY: called once, when the module is instantiated, before any other export runs.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        // A panic ends in a trap that kills the worker with no message of its own: tell the page first.
        let global: JsValue = js_sys::global().into();
        if let Ok(post) =
            Reflect::get(&global, &"postMessage".into()).and_then(|f| f.dyn_into::<Function>())
        {
            let message = Object::new();
            let _ = Reflect::set(&message, &"panic".into(), &info.to_string().into());
            let _ = post.call1(&global, &message);
        }
    }));
}

fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

// One per loaded model: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Task {
    Embeddings(Embedder),
    FillMask(FillMask),
}

/// A loaded model: an encoder for embeddings, or a masked-LM for fill-mask. Both give attention maps.
#[wasm_bindgen]
pub struct Model {
    task: Task,
    backend: Backend,
}

/// Whether this browser hands out a WebGPU adapter (`navigator.gpu` can exist without one).
async fn webgpu_adapter() -> bool {
    let global: JsValue = js_sys::global().into();
    let gpu =
        Reflect::get(&global, &"navigator".into()).and_then(|n| Reflect::get(&n, &"gpu".into()));
    let Ok(gpu) = gpu
        .map_err(drop)
        .and_then(|g| if g.is_undefined() { Err(()) } else { Ok(g) })
    else {
        return false;
    };
    let Ok(request) =
        Reflect::get(&gpu, &"requestAdapter".into()).and_then(|f| f.dyn_into::<Function>())
    else {
        return false;
    };
    match request
        .call0(&gpu)
        .and_then(|p| p.dyn_into::<js_sys::Promise>())
    {
        Ok(promise) => JsFuture::from(promise)
            .await
            .map(|a| !a.is_null() && !a.is_undefined())
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// `"webgpu"` or `"cpu"` as asked; `"auto"` (or nothing) tries WebGPU and falls back to the CPU.
async fn choose_backend(device: Option<String>) -> Result<(Backend, burn::tensor::Device)> {
    match device.as_deref().unwrap_or("auto") {
        "cpu" => Ok((Backend::Cpu, Backend::Cpu.device().await?)),
        "webgpu" if !webgpu_adapter().await => Err(Error::Device(
            "WebGPU is not available in this browser (no adapter); use device: 'cpu'".into(),
        )),
        "webgpu" => Ok((Backend::Wgpu, Backend::Wgpu.device().await?)),
        "auto" => {
            if webgpu_adapter().await
                && let Ok(device) = Backend::Wgpu.device().await
            {
                return Ok((Backend::Wgpu, device));
            }
            Ok((Backend::Cpu, Backend::Cpu.device().await?))
        }
        other => Err(Error::Input(format!(
            "device must be 'webgpu', 'cpu' or 'auto', not {other:?}"
        ))),
    }
}

/// `{ "config.json": Uint8Array, ... }` → the model's files.
fn files_from_object(files: &Object) -> Result<ModelFiles> {
    ModelFiles::from_lookup(|name| {
        let value = Reflect::get(files, &name.into())
            .map_err(|_| Error::Input(format!("cannot read {name}")))?;
        if value.is_undefined() || value.is_null() {
            return Ok(None);
        }
        match value.dyn_into::<Uint8Array>() {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(_) => Err(Error::Input(format!(
                "{name} must be given as bytes (Uint8Array)"
            ))),
        }
    })
}

#[wasm_bindgen]
impl Model {
    /// `task`: `"embeddings"` or `"fill-mask"`; `source`: a base URL (string) in Hugging Face layout, or an
    /// object of file name → `Uint8Array`; `kernels`: `"serial"` or `"tiled"` to run the GPU kernels in
    /// that shape whatever the adapter (for comparing them on one GPU).
    pub async fn load(
        task: String,
        source: JsValue,
        device: Option<String>,
        on_progress: Option<Function>,
        kernels: Option<String>,
    ) -> std::result::Result<Model, JsError> {
        if let Some(kernels) = kernels {
            crate::ops::set_kernel_shape(Some(kernels.parse().map_err(js)?));
        }
        let files = match source.as_string() {
            Some(url) => crate::web::fetch_model(&url, on_progress).await,
            None => match source.dyn_ref::<Object>() {
                Some(object) => files_from_object(object),
                None => Err(Error::Input(
                    "source must be a base URL or an object of files".into(),
                )),
            },
        }
        .map_err(js)?;
        let (backend, device) = choose_backend(device).await.map_err(js)?;
        let task = match task.as_str() {
            "embeddings" => Task::Embeddings(Embedder::load(files, device).map_err(js)?),
            "fill-mask" => Task::FillMask(FillMask::load(files, device).map_err(js)?),
            other => {
                return Err(JsError::new(&format!(
                    "task must be 'embeddings' or 'fill-mask', not {other:?}"
                )));
            }
        };
        Ok(Model { task, backend })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        match self.backend {
            Backend::Wgpu => "webgpu".into(),
            Backend::Cpu => "cpu".into(),
        }
    }

    /// Per `[MASK]`, an array of `{token, tokenId, score, sequence}`, best first.
    pub async fn predict(
        &self,
        text: String,
        top_k: usize,
    ) -> std::result::Result<JsValue, JsError> {
        let Task::FillMask(pipeline) = &self.task else {
            return Err(JsError::new(
                "this model was loaded for embeddings; load it with FillMask for predictions",
            ));
        };
        let output = pipeline.predict(&text, top_k).await.map_err(js)?;
        serde_wasm_bindgen::to_value(&output.masks).map_err(|e| JsError::new(&e.to_string()))
    }

    /// One `Float32Array` per text.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        pooling: String,
        normalize: bool,
    ) -> std::result::Result<Array, JsError> {
        let Task::Embeddings(pipeline) = &self.task else {
            return Err(JsError::new(
                "this model was loaded for fill-mask; load it with Embedder for embeddings",
            ));
        };
        let pooling: Pooling = pooling.parse().map_err(js)?;
        let rows = pipeline
            .embed(&texts, pooling, normalize)
            .await
            .map_err(js)?;
        Ok(rows
            .iter()
            .map(|row| Float32Array::from(row.as_slice()))
            .collect())
    }

    /// `{tokens, offsets, numLayers, numHeads, weights: Float32Array [layer][head][query][key], truncated}`.
    pub async fn attention(&self, text: String) -> std::result::Result<Object, JsError> {
        let output = match &self.task {
            Task::Embeddings(p) => p.attention(&text).await,
            Task::FillMask(p) => p.attention(&text).await,
        }
        .map_err(js)?;
        let result = Object::new();
        let set = |key: &str, value: JsValue| Reflect::set(&result, &key.into(), &value).map(drop);
        let tokens: Array = output.tokens.iter().map(|t| JsValue::from_str(t)).collect();
        let offsets: Array = output
            .offsets
            .iter()
            .map(|(s, e)| Array::of2(&(*s as u32).into(), &(*e as u32).into()))
            .collect();
        set("tokens", tokens.into())
            .and(set("offsets", offsets.into()))
            .and(set("numLayers", (output.num_layers as u32).into()))
            .and(set("numHeads", (output.num_heads as u32).into()))
            .and(set(
                "weights",
                Float32Array::from(output.weights.as_slice()).into(),
            ))
            .and(set("truncated", output.truncated.into()))
            .map_err(|_| JsError::new("could not build the attention result"))?;
        Ok(result)
    }
}
