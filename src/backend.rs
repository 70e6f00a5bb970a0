//! Which burn device runs the model: its CPU backend (flex) or wgpu (WebGPU in the browser, Vulkan/Metal/DX
//! natively), and how a result comes back from it.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Wgpu,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "wgpu" | "webgpu" => Ok(Backend::Wgpu),
            other => Err(Error::Input(format!(
                "backend must be \"cpu\" or \"wgpu\", not {other:?}"
            ))),
        }
    }
}

#[cfg(target_arch = "wasm32")]
thread_local! {
    static WEBGPU: std::cell::OnceCell<std::result::Result<Device, String>> = const { std::cell::OnceCell::new() };
}

#[cfg(not(target_arch = "wasm32"))]
static WGPU: std::sync::OnceLock<std::result::Result<Device, String>> = std::sync::OnceLock::new();

impl Backend {
    /// The device; wgpu is initialised once per process, and a missing adapter is an error.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn device(self) -> Result<Device> {
        match self {
            Backend::Cpu => Ok(Device::flex()),
            Backend::Wgpu => WGPU
                .get_or_init(|| Device::wgpu_options().init().map_err(|e| format!("{e:?}")))
                .clone()
                .map_err(|e| Error::Device(format!("no wgpu adapter could be initialised: {e}"))),
        }
    }

    /// The device; in a browser WebGPU must be initialised asynchronously, once.
    #[cfg(target_arch = "wasm32")]
    pub async fn device(self) -> Result<Device> {
        use burn::tensor::wgpu::WgpuBackend;
        match self {
            Backend::Cpu => Ok(Device::flex()),
            Backend::Wgpu => {
                if let Some(ready) = WEBGPU.with(|cell| cell.get().cloned()) {
                    return ready.map_err(Error::Device);
                }
                let result = Device::wgpu_options()
                    .graphics_api(WgpuBackend::WebGpu)
                    .init_async()
                    .await
                    .map_err(|e| format!("WebGPU could not be initialised: {e:?}"));
                WEBGPU
                    .with(|cell| cell.get_or_init(|| result).clone())
                    .map_err(Error::Device)
            }
        }
    }
}

/// How a call's result comes back from the GPU. `Map`: cubecl's read alone (a copy into a mappable buffer,
/// submitted, then `mapAsync`). `Settle`: first a flush and `onSubmittedWorkDone` (cubecl's `sync`), then the
/// read. `Join`: both at once. In Chrome on the H100 a read resolved ~3 ms after submission whatever the work
/// (README, "On a real GPU"); the browser's `readback` load option picks one, to compare them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readback {
    #[default]
    Map,
    Settle,
    Join,
}

impl std::str::FromStr for Readback {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "map" => Ok(Readback::Map),
            "settle" => Ok(Readback::Settle),
            "join" => Ok(Readback::Join),
            other => Err(Error::Input(format!(
                "readback must be \"map\", \"settle\" or \"join\", not {other:?}"
            ))),
        }
    }
}

thread_local! {
    static READBACK: std::cell::Cell<Readback> = const { std::cell::Cell::new(Readback::Map) };
}

/// Every result read on this thread from now on comes back as `readback` says.
pub fn set_readback(readback: Readback) {
    READBACK.with(|r| r.set(readback));
}

/// `tensor`'s values on the host, read as [`set_readback`] last said.
pub async fn read_back(tensor: Tensor<2>) -> Result<TensorData> {
    let read = async {
        tensor
            .clone()
            .into_data_async()
            .await
            .map_err(|e| Error::Device(format!("reading results back failed: {e:?}")))
    };
    match READBACK.with(std::cell::Cell::get) {
        Readback::Map => read.await,
        Readback::Settle => {
            settle(&tensor).await?;
            read.await
        }
        Readback::Join => {
            let (settled, data) = futures_lite::future::zip(settle(&tensor), read).await;
            settled.and(data)
        }
    }
}

/// Waits until the GPU has run everything submitted so far, pending kernels flushed first; nothing on the CPU.
async fn settle(tensor: &Tensor<2>) -> Result<()> {
    use burn::backend::{BackendTensor, DispatchTensorKind};
    if let DispatchTensorKind::Cube(BackendTensor::Float(t)) = tensor.clone().into_dispatch().kind {
        t.client
            .sync()
            .await
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e:?}")))?;
    }
    Ok(())
}
