//! Which burn device runs the model: its CPU backend (flex) or wgpu (WebGPU in the browser, Vulkan/Metal/DX
//! natively), and how a result comes back from it.

use std::pin::Pin;

use burn::tensor::{Device, Tensor, TensorData};
use cubecl::server::CopyDescriptor;

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

/// A result on its way back to the host. With [`Readback::Map`] on a GPU the read starts when this is made:
/// its copy is queued behind the work submitted so far and ahead of any submitted later, so that the next
/// batch can be launched before these values are awaited, and the GPU runs it meanwhile. Elsewhere (the
/// CPU, the other readbacks) the work is flushed and the read waits for [`data`](Self::data).
pub enum Reading {
    Queued {
        read: Read,
        /// Kept until the copy has run (later work could otherwise reuse its memory first).
        _tensor: Tensor<2>,
    },
    Later(Tensor<2>),
}

type Read = Pin<Box<dyn Future<Output = Result<TensorData>> + Send>>;

impl Reading {
    pub fn start(tensor: Tensor<2>) -> Self {
        if READBACK.with(std::cell::Cell::get) == Readback::Map
            && let Some(read) = queue_read(&tensor)
        {
            return Reading::Queued {
                read,
                _tensor: tensor,
            };
        }
        // Only the device's own errors come from flushing; the read reports them.
        let _ = tensor.device().flush();
        Reading::Later(tensor)
    }

    /// Whether the copy is queued: work launched from now on may overwrite the tensor.
    pub fn is_queued(&self) -> bool {
        matches!(self, Reading::Queued { .. })
    }

    /// The values on the host.
    pub async fn data(self) -> Result<TensorData> {
        match self {
            Reading::Queued { read, .. } => read.await,
            Reading::Later(tensor) => read_back(tensor).await,
        }
    }
}

/// `tensor`'s copy to the host queued now, on a GPU, where it is laid out row by row (a kernel's output).
fn queue_read(tensor: &Tensor<2>) -> Option<Read> {
    use burn::backend::{BackendTensor, DispatchTensorKind};
    use std::task::{Context, Poll, Waker};
    let DispatchTensorKind::Cube(BackendTensor::Float(t)) = tensor.clone().into_dispatch().kind
    else {
        return None;
    };
    let shape = t.meta.shape().clone();
    if t.meta.strides()[..] != [shape[1], 1] {
        return None;
    }
    let (strides, elem_size, dtype) = (t.meta.strides().clone(), t.elem_size(), t.dtype);
    let descriptor = CopyDescriptor::new(t.handle.binding(), shape.clone(), strides, elem_size);
    let client = t.client;
    let mut read: Read = Box::pin(async move {
        let bytes = client
            .read_one_tensor_async(descriptor)
            .await
            .map_err(|e| Error::Device(format!("reading results back failed: {e:?}")))?;
        Ok(TensorData::from_bytes(bytes, shape, dtype))
    });
    // Polled once now: cubecl queues the copy as the read is asked for, then waits for the mapping.
    if let Poll::Ready(done) = read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        read = Box::pin(std::future::ready(done));
    }
    Some(read)
}

/// `tensor`'s values on the host, read as [`set_readback`] last said, once awaited.
async fn read_back(tensor: Tensor<2>) -> Result<TensorData> {
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
