//! Which burn device runs the model: its CPU backend (flex) or wgpu (WebGPU in the browser, Vulkan/Metal/DX
//! natively).

use burn::tensor::Device;

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
