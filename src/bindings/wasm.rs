//! JavaScript bindings (wasm-bindgen). Thin: every call is one pipeline call; every failure rejects with
//! an `Error` whose message says what was wrong, and the instance stays usable.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Object, Reflect, Uint8Array, Uint32Array};
use wasm_bindgen::prelude::*;

use super::placement::{Placed, place, warn_gpu_failed};
use super::task::{Task, wrong_task};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::source::{ModelFiles, WeightsDtype};
use crate::model::heads::Pooling;
use crate::pipelines::{Aggregation, QaOptions, TextInput};

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

/// One line: the first of a message (a device error can carry a chain and a backtrace after it).
fn js(e: Error) -> JsError {
    JsError::new(e.to_string().lines().next().unwrap_or_default())
}

/// A loaded model: an encoder for embeddings, a masked-LM for fill-mask, a sequence classifier, a token
/// classifier or an extractive question answerer. Each gives attention maps.
/// If the GPU is lost (a GPU process crash, a driver reset), the model moves to the CPU and the call
/// that saw it runs again there.
#[wasm_bindgen]
pub struct Model {
    /// Swapped only when the GPU is lost; each call holds its own reference, no borrow across awaits.
    placed: RefCell<Rc<Placed>>,
    task: String,
    /// Where the files came from, to load them again on the CPU if the GPU is lost (kept only while the
    /// model is on the GPU without a CPU copy).
    source: RefCell<Option<Source>>,
}

#[derive(Clone)]
enum Source {
    Url {
        url: String,
        dtype: WeightsDtype,
        stall_ms: u32,
    },
    /// The page's files (a JS object of `Uint8Array`s, kept in the worker's JS heap).
    Files { files: Object, dtype: WeightsDtype },
}

impl Source {
    async fn files(&self, on_progress: Option<Function>) -> Result<ModelFiles> {
        match self {
            Source::Url {
                url,
                dtype,
                stall_ms,
            } => super::web::fetch_model(url, *dtype, on_progress, *stall_ms).await,
            Source::Files { files, dtype } => files_from_object(files, *dtype),
        }
    }
}

impl Model {
    fn placed(&self) -> Rc<Placed> {
        self.placed.borrow().clone()
    }

    /// `call` on the model; if the GPU fails under it, the model moves to the CPU and `call` runs again.
    async fn run<T>(&self, call: impl AsyncFn(&Placed) -> Result<T>) -> Result<T> {
        let placed = self.placed();
        match call(&placed).await {
            Err(Error::Device(reason)) if placed.backend == Backend::Wgpu => {
                warn_gpu_failed(&reason);
                let source = self.source.borrow().clone();
                let placed = Rc::new(
                    placed
                        .on_cpu(async || {
                            let Some(source) = source else {
                                return Err(Error::Device(reason));
                            };
                            let files = source.files(None).await?;
                            Task::load(&self.task, &files, Backend::Cpu.device().await?)
                        })
                        .await?,
                );
                *self.placed.borrow_mut() = placed.clone();
                *self.source.borrow_mut() = None;
                call(&placed).await
            }
            result => result,
        }
    }
}

/// `{ "config.json": Uint8Array, ... }` → the model's files.
fn files_from_object(files: &Object, dtype: WeightsDtype) -> Result<ModelFiles> {
    ModelFiles::from_lookup(dtype, |name| {
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
    /// `task`: `"embeddings"`, `"fill-mask"`, `"text-classification"`, `"token-classification"` or
    /// `"question-answering"`; `source`: a base URL (string) in Hugging Face layout, or an
    /// object of file name → `Uint8Array`; `options`: `{device = 'auto', dtype = 'auto', kernels,
    /// readback, stallTimeout = 30000}`, `dtype` which weights to fetch (`'fp32'`, `'fp16'`, `'q8'`, or the smallest there is),
    /// `kernels` `"serial"`, `"tiled"` or `"tiled-subgroups"` to run the GPU kernels in that shape whatever the adapter and
    /// `readback` `"map"`, `"settle"` or `"join"` to read results back that way (for comparing them on one
    /// GPU, see [`crate::backend::Readback`]), `stallTimeout` the milliseconds a download may receive nothing.
    pub async fn load(
        task: String,
        source: JsValue,
        options: JsValue,
        on_progress: Option<Function>,
    ) -> std::result::Result<Model, JsError> {
        let device = option(&options, "device")?
            .map(|v| string_arg(&v, "options.device"))
            .transpose()?;
        // Settings of the whole module, so each load sets both: one left out is the default again.
        let kernels = match option(&options, "kernels")? {
            Some(value) => Some(string_arg(&value, "options.kernels")?.parse().map_err(js)?),
            None => None,
        };
        let readback = match option(&options, "readback")? {
            Some(value) => string_arg(&value, "options.readback")?
                .parse()
                .map_err(js)?,
            None => crate::backend::Readback::default(),
        };
        crate::ops::set_kernel_shape(kernels);
        crate::backend::set_readback(readback);
        let stall_ms = match option(&options, "stallTimeout")? {
            // Browsers run a `setTimeout` of more than 2³¹ − 1 ms at once: that is the longest wait.
            Some(value) => count_arg(&value, "options.stallTimeout")?.min(i32::MAX as usize) as u32,
            None => super::web::STALL_MS,
        };
        let dtype = match option(&options, "dtype")? {
            Some(value) => string_arg(&value, "options.dtype")?.parse().map_err(js)?,
            None => WeightsDtype::Auto,
        };
        let source = match source.as_string() {
            Some(url) => Source::Url {
                url,
                dtype,
                stall_ms,
            },
            None => match source.dyn_into::<Object>() {
                Ok(files) => Source::Files { files, dtype },
                Err(_) => {
                    return Err(JsError::new(
                        "source must be a base URL or an object of files",
                    ));
                }
            },
        };
        let files = source.files(on_progress).await.map_err(js)?;
        let placed = place(&task, &files, device.as_deref()).await.map_err(js)?;
        // Only a model on the GPU alone would load again, on the CPU, if the GPU is lost.
        let reloads = placed.backend == Backend::Wgpu && placed.small.is_none();
        Ok(Model {
            placed: RefCell::new(Rc::new(placed)),
            task,
            source: RefCell::new(reloads.then_some(source)),
        })
    }

    /// With `device: 'auto'`: calls of fewer tokens than this run on the CPU, as the load measured it
    /// faster there (`undefined` when every call runs on `backend`).
    #[wasm_bindgen(getter)]
    pub fn crossover(&self) -> Option<u32> {
        let placed = self.placed();
        placed
            .small
            .as_ref()
            .map(|(_, threshold)| *threshold as u32)
    }

    /// `{submitMs, waitMs}` of one forward pass of `tokens` tokens on `backend`: what the CPU spends
    /// submitting the work, then the wait for the device and one small read back.
    pub async fn timing(&self, tokens: JsValue) -> std::result::Result<JsValue, JsError> {
        let tokens = count_arg(&tokens, "tokens")?;
        let timing = self
            .run(async |placed| placed.task.timing(tokens).await)
            .await
            .map_err(js)?;
        serde_wasm_bindgen::to_value(&timing).map_err(|e| JsError::new(&e.to_string()))
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        match self.placed().backend {
            Backend::Wgpu => "webgpu".into(),
            Backend::Cpu => "cpu".into(),
        }
    }

    /// Per `[MASK]`, an array of `{token, tokenId, score, sequence}`, best first; `options`: `{topK = 5}`
    /// (past the vocabulary, the whole vocabulary; at most 50,000 predictions in all).
    pub async fn predict(
        &self,
        text: JsValue,
        options: JsValue,
    ) -> std::result::Result<JsValue, JsError> {
        let text = string_arg(&text, "text")?;
        let top_k = match option(&options, "topK")? {
            Some(value) => count_arg(&value, "options.topK")?,
            None => 5,
        };
        let output = self
            .run(async |placed| match placed.route(&[&text]) {
                Task::FillMask(pipeline) => pipeline.predict(&text, top_k).await,
                other => Err(wrong_task(other, "FillMask")),
            })
            .await
            .map_err(js)?;
        serde_wasm_bindgen::to_value(&output.masks).map_err(|e| JsError::new(&e.to_string()))
    }

    /// One `Float32Array` per text (a string, or an array of strings); `options`: `{pooling: 'mean' |
    /// 'cls', normalize}`, by default as the checkpoint's sentence-transformers files say (else mean,
    /// normalised). After each forward pass, `progress({done,
    /// total})`; when it returns `false` the call stops there.
    pub async fn embed(
        &self,
        texts: JsValue,
        options: JsValue,
        progress: Option<Function>,
    ) -> std::result::Result<Array, JsError> {
        let texts: Vec<String> = match texts.as_string() {
            Some(text) => vec![text],
            None if Array::is_array(&texts) => Array::from(&texts)
                .iter()
                .enumerate()
                .map(|(i, text)| string_arg(&text, &format!("texts[{i}]")))
                .collect::<std::result::Result<_, _>>()?,
            None => {
                return Err(JsError::new(&format!(
                    "texts must be a string or an array of strings, not {}",
                    describe(&texts)
                )));
            }
        };
        // Unless given, as the checkpoint's sentence-transformers files say.
        let pooling: Option<Pooling> = match option(&options, "pooling")? {
            Some(value) => Some(string_arg(&value, "options.pooling")?.parse().map_err(js)?),
            None => None,
        };
        let normalize = match option(&options, "normalize")? {
            Some(value) => Some(value.as_bool().ok_or_else(|| {
                JsError::new(&format!(
                    "options.normalize must be true or false, not {}",
                    describe(&value)
                ))
            })?),
            None => None,
        };
        let all: Vec<&str> = texts.iter().map(String::as_str).collect();
        let rows = self
            .run(async |placed| match placed.route(&all) {
                Task::Embeddings(pipeline) => {
                    let step =
                        async |done, total| between_passes(progress.as_ref(), done, total).await;
                    let pooling = pooling.unwrap_or(pipeline.sentence.pooling);
                    let normalize = normalize.unwrap_or(pipeline.sentence.normalize);
                    pipeline.embed_with(&texts, pooling, normalize, step).await
                }
                other => Err(wrong_task(other, "Embedder")),
            })
            .await
            .map_err(js)?;
        Ok(rows
            .iter()
            .map(|row| Float32Array::from(row.as_slice()))
            .collect())
    }

    /// The `topK` (default 1) likeliest `{label, score}` of each input, best first. `inputs`: a text, a
    /// pair `{text, textPair}`, or an array of them (then one array of labels per input).
    pub async fn classify(
        &self,
        inputs: JsValue,
        options: JsValue,
    ) -> std::result::Result<JsValue, JsError> {
        let top_k = match option(&options, "topK")? {
            Some(value) => count_arg(&value, "options.topK")?,
            None => 1,
        };
        let single = !Array::is_array(&inputs);
        let owned: Vec<(String, Option<String>)> = match single {
            true => vec![text_input(&inputs, "input")?],
            false => Array::from(&inputs)
                .iter()
                .enumerate()
                .map(|(i, input)| text_input(&input, &format!("inputs[{i}]")))
                .collect::<std::result::Result<_, _>>()?,
        };
        let pairs: Vec<TextInput> = owned
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_deref()))
            .collect();
        let all: Vec<&str> = pairs
            .iter()
            .flat_map(|(a, b)| [Some(*a), *b])
            .flatten()
            .collect();
        let labels = self
            .run(async |placed| match placed.route(&all) {
                Task::TextClassification(pipeline) => pipeline.classify(&pairs, top_k).await,
                other => Err(wrong_task(other, "Classifier")),
            })
            .await
            .map_err(js)?;
        let value = match single {
            true => serde_wasm_bindgen::to_value(&labels[0]),
            false => serde_wasm_bindgen::to_value(&labels),
        };
        value.map_err(|e| JsError::new(&e.to_string()))
    }

    /// `passages` (an array of strings) as `{index, score, text}`, the most relevant to `query` first,
    /// scored by a cross-encoder; `options`: `{topK}` (default: all).
    pub async fn rerank(
        &self,
        query: JsValue,
        passages: JsValue,
        options: JsValue,
    ) -> std::result::Result<JsValue, JsError> {
        let query = string_arg(&query, "query")?;
        if !Array::is_array(&passages) {
            return Err(JsError::new(&format!(
                "passages must be an array of strings, not {}",
                describe(&passages)
            )));
        }
        let passages: Vec<String> = Array::from(&passages)
            .iter()
            .enumerate()
            .map(|(i, p)| string_arg(&p, &format!("passages[{i}]")))
            .collect::<std::result::Result<_, _>>()?;
        let top_k = match option(&options, "topK")? {
            Some(value) => count_arg(&value, "options.topK")?,
            None => passages.len(),
        };
        let all: Vec<&str> = passages
            .iter()
            .map(String::as_str)
            .chain([query.as_str()])
            .collect();
        let ranked = self
            .run(async |placed| match placed.route(&all) {
                Task::TextClassification(pipeline) => {
                    pipeline.rerank(&query, &passages, top_k).await
                }
                other => Err(wrong_task(other, "Classifier")),
            })
            .await
            .map_err(js)?;
        serde_wasm_bindgen::to_value(&ranked).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The named entities of `text`: `{entity, score, index, word, start, end}` per token, or with
    /// `options.aggregation = 'simple'` `{entityGroup, score, word, start, end}` per run of tokens of one
    /// type (`'none'` by default).
    pub async fn entities(
        &self,
        text: JsValue,
        options: JsValue,
    ) -> std::result::Result<JsValue, JsError> {
        let text = string_arg(&text, "text")?;
        let aggregation: Aggregation = match option(&options, "aggregation")? {
            Some(value) => string_arg(&value, "options.aggregation")?
                .parse()
                .map_err(js)?,
            None => Aggregation::None,
        };
        let entities = self
            .run(async |placed| match placed.route(&[&text]) {
                Task::TokenClassification(pipeline) => pipeline.entities(&text, aggregation).await,
                other => Err(wrong_task(other, "TokenClassifier")),
            })
            .await
            .map_err(js)?;
        serde_wasm_bindgen::to_value(&entities).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The `topK` (default 1) likeliest answers `{score, start, end, answer}` to `question` in `context`,
    /// best first; `options`: `{topK, maxAnswerLen = 15, maxSeqLen, docStride}` (chunks of a long context:
    /// at most 384 tokens or the model's positions, overlapping by up to 128).
    pub async fn answer(
        &self,
        question: JsValue,
        context: JsValue,
        options: JsValue,
    ) -> std::result::Result<JsValue, JsError> {
        let question = string_arg(&question, "question")?;
        let context = string_arg(&context, "context")?;
        let mut qa = QaOptions::new(self.placed().task.tokenizer().max_len());
        for (key, field) in [
            ("topK", &mut qa.top_k),
            ("maxAnswerLen", &mut qa.max_answer_len),
            ("maxSeqLen", &mut qa.max_seq_len),
        ] {
            if let Some(value) = option(&options, key)? {
                *field = count_arg(&value, &format!("options.{key}"))?;
            }
        }
        match option(&options, "docStride")? {
            Some(value) if value.as_f64() == Some(0.0) => qa.doc_stride = 0,
            Some(value) => qa.doc_stride = count_arg(&value, "options.docStride")?,
            None => qa.doc_stride = qa.doc_stride.min(qa.max_seq_len / 2),
        }
        let answers = self
            .run(async |placed| match placed.route(&[&question, &context]) {
                Task::QuestionAnswering(pipeline) => {
                    pipeline.answer(&question, &context, &qa).await
                }
                other => Err(wrong_task(other, "QuestionAnswerer")),
            })
            .await
            .map_err(js)?;
        serde_wasm_bindgen::to_value(&answers).map_err(|e| JsError::new(&e.to_string()))
    }

    /// `{tokens, ids: Uint32Array, offsets, truncated}`: the text as the model reads it (special tokens
    /// included, cut at the model's positions), e.g. to count tokens before embedding a long document.
    pub fn tokenize(&self, text: JsValue) -> std::result::Result<Object, JsError> {
        let text = string_arg(&text, "text")?;
        let placed = self.placed();
        let tokenizer = placed.task.tokenizer();
        let encoding = tokenizer.encode(&text).map_err(js)?;
        let tokens = tokenizer.ids_to_tokens(&encoding.ids);
        let result = Object::new();
        let set = |key: &str, value: JsValue| Reflect::set(&result, &key.into(), &value).map(drop);
        set("tokens", tokens_array(&tokens))
            .and(set(
                "ids",
                Uint32Array::from(encoding.ids.as_slice()).into(),
            ))
            .and(set("offsets", offsets_array(&encoding.offsets)))
            .and(set("truncated", encoding.truncated.into()))
            .map_err(|_| JsError::new("could not build the tokenize result"))?;
        Ok(result)
    }

    /// `{tokens, offsets, numLayers, numHeads, weights: Float32Array [layer][head][query][key], truncated}`.
    pub async fn attention(&self, text: JsValue) -> std::result::Result<Object, JsError> {
        let text = string_arg(&text, "text")?;
        let output = self
            .run(async |placed| match placed.route(&[&text]) {
                Task::Embeddings(p) => p.attention(&text).await,
                Task::FillMask(p) => p.attention(&text).await,
                Task::TextClassification(p) => p.attention(&text).await,
                Task::TokenClassification(p) => p.attention(&text).await,
                Task::QuestionAnswering(p) => p.attention(&text).await,
            })
            .await
            .map_err(js)?;
        let result = Object::new();
        let set = |key: &str, value: JsValue| Reflect::set(&result, &key.into(), &value).map(drop);
        set("tokens", tokens_array(&output.tokens))
            .and(set("offsets", offsets_array(&output.offsets)))
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

/// Between the forward passes of a long call: lets the worker's event loop run (so that an abort from the
/// page can arrive), reports `{done, total}`, and stops the call when `progress` returns `false`.
async fn between_passes(progress: Option<&Function>, done: usize, total: usize) -> Result<()> {
    let Some(progress) = progress else {
        return Ok(());
    };
    super::web::yield_to_events().await;
    let event = Object::new();
    let _ = Reflect::set(&event, &"done".into(), &(done as f64).into());
    let _ = Reflect::set(&event, &"total".into(), &(total as f64).into());
    match progress.call1(&JsValue::NULL, &event) {
        Ok(go_on) if go_on == JsValue::FALSE => Err(Error::Aborted),
        _ => Ok(()),
    }
}

fn tokens_array(tokens: &[String]) -> JsValue {
    tokens
        .iter()
        .map(|t| JsValue::from_str(t))
        .collect::<Array>()
        .into()
}

/// `[start, end)` character offsets as `[[start, end], …]`.
fn offsets_array(offsets: &[(usize, usize)]) -> JsValue {
    offsets
        .iter()
        .map(|(s, e)| Array::of2(&(*s as u32).into(), &(*e as u32).into()))
        .collect::<Array>()
        .into()
}

// Arguments arrive from JavaScript as they were passed: each is checked here, so a wrong one rejects with
// what was expected instead of reaching wasm-bindgen's conversions.

fn string_arg(value: &JsValue, what: &str) -> std::result::Result<String, JsError> {
    value
        .as_string()
        .ok_or_else(|| JsError::new(&format!("{what} must be a string, not {}", describe(value))))
}

/// A classifier's input: a string, or `{text, textPair}`.
fn text_input(
    value: &JsValue,
    what: &str,
) -> std::result::Result<(String, Option<String>), JsError> {
    if let Some(text) = value.as_string() {
        return Ok((text, None));
    }
    if !value.is_object() {
        return Err(JsError::new(&format!(
            "{what} must be a string or {{text, textPair}}, not {}",
            describe(value)
        )));
    }
    let field = |key: &str| Reflect::get(value, &key.into()).unwrap_or(JsValue::UNDEFINED);
    let text = string_arg(&field("text"), &format!("{what}.text"))?;
    let pair = field("textPair");
    let pair = match pair.is_undefined() || pair.is_null() {
        true => None,
        false => Some(string_arg(&pair, &format!("{what}.textPair"))?),
    };
    Ok((text, pair))
}

/// A whole number of at least 1 (past `usize::MAX`, `usize::MAX`: every limit clamps it).
fn count_arg(value: &JsValue, what: &str) -> std::result::Result<usize, JsError> {
    match value.as_f64() {
        Some(n) if n >= 1.0 && n.fract() == 0.0 => Ok(n as usize),
        _ => Err(JsError::new(&format!(
            "{what} must be a whole number of at least 1, not {}",
            describe(value)
        ))),
    }
}

/// `options[key]`, where `options` is an object or nothing; `undefined` and `null` mean the default.
fn option(options: &JsValue, key: &str) -> std::result::Result<Option<JsValue>, JsError> {
    if options.is_undefined() || options.is_null() {
        return Ok(None);
    }
    if !options.is_object() || Array::is_array(options) {
        return Err(JsError::new(&format!(
            "options must be an object, not {}",
            describe(options)
        )));
    }
    let value = Reflect::get(options, &key.into())
        .map_err(|_| JsError::new(&format!("options.{key} could not be read")))?;
    Ok((!value.is_undefined() && !value.is_null()).then_some(value))
}

/// A value as an error message names it: numbers and strings as written, anything else by its type.
fn describe(value: &JsValue) -> String {
    if let Some(n) = value.as_f64() {
        format!("{n}")
    } else if let Some(s) = value.as_string() {
        format!("{s:?}")
    } else if value.is_null() {
        "null".into()
    } else if Array::is_array(value) {
        "an array".into()
    } else {
        value.js_typeof().as_string().unwrap_or_default()
    }
}
