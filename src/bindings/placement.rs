//! Where a model runs in the browser: on WebGPU, on the CPU, or (`device: 'auto'`) on the GPU with a
//! copy on the CPU for the short calls that the CPU was measured to run faster.

use std::rc::Rc;

use js_sys::{Function, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::task::Task;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::source::ModelFiles;

/// The model on its device(s).
pub(super) struct Placed {
    pub(super) task: Rc<Task>,
    pub(super) backend: Backend,
    /// With `device: 'auto'` on a GPU that the CPU beats on short inputs: a copy of the model on the CPU,
    /// and the fewest tokens a call needs to go to the GPU.
    pub(super) small: Option<(Rc<Task>, usize)>,
}

impl Placed {
    fn on(task: Task, backend: Backend) -> Self {
        Placed {
            task: Rc::new(task),
            backend,
            small: None,
        }
    }

    /// The model on the CPU alone, once the GPU is lost: its CPU copy if it has one, else what `load`
    /// gives.
    pub(super) async fn on_cpu(&self, load: impl AsyncFnOnce() -> Result<Task>) -> Result<Self> {
        let task = match &self.small {
            Some((cpu, _)) => cpu.clone(),
            None => Rc::new(load().await?),
        };
        Ok(Placed {
            task,
            backend: Backend::Cpu,
            small: None,
        })
    }

    /// The task that takes a call on `texts`: the CPU copy if it was measured faster at their length.
    /// Counting stops at the threshold, so a large call is not tokenized twice.
    pub(super) fn route(&self, texts: &[&str]) -> &Task {
        let Some((cpu, threshold)) = &self.small else {
            return &self.task;
        };
        let tokenizer = self.task.tokenizer();
        let mut tokens = 0;
        for text in texts {
            tokens += tokenizer.encode(text).map_or(0, |e| e.ids.len());
            if tokens >= *threshold {
                return &self.task;
            }
        }
        cpu
    }
}

/// What `navigator.gpu.requestAdapter()` says of the adapter, if the browser hands one out
/// (`navigator.gpu` can exist without one).
struct Adapter {
    /// Vendor, architecture and description: what a measurement is remembered under.
    name: String,
    /// A CPU implementation (SwiftShader).
    fallback: bool,
}

async fn webgpu_adapter() -> Option<Adapter> {
    let global: JsValue = js_sys::global().into();
    let gpu = Reflect::get(&global, &"navigator".into())
        .and_then(|n| Reflect::get(&n, &"gpu".into()))
        .ok()
        .filter(|g| !g.is_undefined())?;
    let request = Reflect::get(&gpu, &"requestAdapter".into())
        .and_then(|f| f.dyn_into::<Function>())
        .ok()?;
    let promise = request
        .call0(&gpu)
        .and_then(|p| p.dyn_into::<js_sys::Promise>())
        .ok()?;
    let adapter = JsFuture::from(promise)
        .await
        .ok()
        .filter(|a| !a.is_null() && !a.is_undefined())?;
    let info = Reflect::get(&adapter, &"info".into()).unwrap_or(JsValue::UNDEFINED);
    let field = |key: &str| {
        Reflect::get(&info, &key.into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let fallback = Reflect::get(&info, &"isFallbackAdapter".into())
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Some(Adapter {
        name: [field("vendor"), field("architecture"), field("description")].join("/"),
        fallback,
    })
}

/// Token lengths whose forward passes `'auto'` times on both devices, smallest first.
const PROBES: [usize; 3] = [16, 64, 256];

/// The fewest tokens at which a forward pass on the GPU (`gpu`) is no slower than on the CPU (`cpu`):
/// 0 if the GPU wins already at the smallest probe, `usize::MAX` if it never does up to the largest.
/// Each device runs each length twice first (compiling kernels), then twice timed, best kept.
async fn gpu_threshold(gpu: &Task, cpu: &Task) -> Result<usize> {
    let best = async |task: &Task, tokens| -> Result<f64> {
        let mut best = f64::MAX;
        for run in 0..4 {
            let timing = task.timing(tokens).await?;
            if run >= 2 {
                best = best.min(timing.submit_ms + timing.wait_ms);
            }
        }
        Ok(best)
    };
    let max = gpu.tokenizer().max_len();
    for (i, tokens) in PROBES.into_iter().map(|t| t.min(max)).enumerate() {
        if best(gpu, tokens).await? <= best(cpu, tokens).await? {
            return Ok(if i == 0 { 0 } else { tokens });
        }
    }
    Ok(usize::MAX)
}

/// The model on the device asked for: `"webgpu"`, `"cpu"`, or `"auto"` (or nothing): the CPU without a
/// GPU adapter or with a CPU one (SwiftShader: our CPU path was 5–8× faster at every size measured);
/// otherwise the GPU, with a CPU copy for the lengths at which the CPU was measured faster (measured once
/// per adapter and model shape, then remembered in Cache Storage); the CPU alone if the GPU fails while
/// it is set up or timed.
pub(super) async fn place(task: &str, files: &ModelFiles, device: Option<&str>) -> Result<Placed> {
    let cpu = async || Task::load(task, files, Backend::Cpu.device().await?);
    let adapter = webgpu_adapter().await;
    match device.unwrap_or("auto") {
        "cpu" => Ok(Placed::on(cpu().await?, Backend::Cpu)),
        "webgpu" if adapter.is_none() => Err(Error::Device(
            "WebGPU is not available in this browser (no adapter); use device: 'cpu'".into(),
        )),
        "webgpu" => {
            let gpu = Task::load(task, files, Backend::Wgpu.device().await?)?;
            Ok(Placed::on(gpu, Backend::Wgpu))
        }
        "auto" => {
            let Some(adapter) = adapter.filter(|a| !a.fallback) else {
                return Ok(Placed::on(cpu().await?, Backend::Cpu));
            };
            match on_gpu_measured(task, files, &adapter, cpu).await {
                // As a call does when the GPU fails under it; nothing is remembered, so the next load
                // tries the GPU again.
                Err(Error::Device(reason)) => {
                    warn_gpu_failed(&reason);
                    Ok(Placed::on(cpu().await?, Backend::Cpu))
                }
                placed => placed,
            }
        }
        other => Err(Error::Input(format!(
            "device must be 'webgpu', 'cpu' or 'auto', not {other:?}"
        ))),
    }
}

/// Says on the console why the model leaves the GPU (the first line of `reason`: a device error can carry
/// a chain and a backtrace after it).
pub(super) fn warn_gpu_failed(reason: &str) {
    let first_line = reason.lines().next().unwrap_or_default();
    web_sys::console::warn_1(
        &format!("webbert: the GPU failed ({first_line}); going on on the CPU").into(),
    );
}

/// `'auto'` on a GPU adapter: the model on the GPU, and on the CPU too for the lengths at which the CPU
/// was measured faster (or only there, if it was faster at every length).
async fn on_gpu_measured(
    task: &str,
    files: &ModelFiles,
    adapter: &Adapter,
    cpu: impl AsyncFn() -> Result<Task>,
) -> Result<Placed> {
    let gpu = Task::load(task, files, Backend::Wgpu.device().await?)?;
    let c = &files.config;
    let key = format!(
        "crossover/{}/{}x{}x{}x{}",
        adapter.name,
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads
    );
    let remembered = super::web::remembered(&key)
        .await
        .and_then(|v| v.parse::<usize>().ok());
    if remembered == Some(0) {
        return Ok(Placed::on(gpu, Backend::Wgpu));
    }
    let cpu = cpu().await?;
    let threshold = match remembered {
        Some(threshold) => threshold,
        None => {
            let threshold = gpu_threshold(&gpu, &cpu).await?;
            super::web::remember(&key, &threshold.to_string()).await;
            threshold
        }
    };
    Ok(match threshold {
        0 => Placed::on(gpu, Backend::Wgpu),
        usize::MAX => Placed::on(cpu, Backend::Cpu),
        threshold => Placed {
            small: Some((Rc::new(cpu), threshold)),
            ..Placed::on(gpu, Backend::Wgpu)
        },
    })
}
