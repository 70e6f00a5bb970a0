//! Shared by the integration tests: fixture paths, golden tensors, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use safetensors::SafeTensors;
use webbert::ops::{KernelShape, with_kernel_shape};
use webbert::{Backend, ModelFiles};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// all-MiniLM-L6-v2 in Hugging Face layout: `scripts/fetch-model.sh` puts it here.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("WEBBERT_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

pub fn minilm() -> ModelFiles {
    ModelFiles::from_dir(&minilm_dir()).expect("all-MiniLM-L6-v2 loads")
}

/// Where every numeric test runs: burn's CPU backend, and wgpu with each shape of our GPU kernels
/// (lavapipe here would get `Serial` by itself; `Tiled` is what real GPUs get).
pub const TARGETS: [Target; 3] = [
    Target(Backend::Cpu, KernelShape::Serial, Limits::Adapter),
    Target(Backend::Wgpu, KernelShape::Serial, Limits::Adapter),
    Target(
        Backend::Wgpu,
        KernelShape::Tiled { subgroups: false },
        Limits::Adapter,
    ),
];

/// The GPU targets again on a wgpu device held to WebGPU's default limits ([`Limits::WebGpu`]).
pub const WEBGPU_DEFAULT_TARGETS: [Target; 2] = [
    Target(Backend::Wgpu, KernelShape::Serial, Limits::WebGpu),
    Target(
        Backend::Wgpu,
        KernelShape::Tiled { subgroups: false },
        Limits::WebGpu,
    ),
];

#[derive(Debug, Clone, Copy)]
pub struct Target(pub Backend, pub KernelShape, pub Limits);

/// What a wgpu device may use. The library asks for all that the adapter offers (as cubecl does), but
/// lavapipe offers more than many browsers' adapters: Chrome gives 8 or 10 storage buffers a kernel
/// depending on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    Adapter,
    /// WebGPU's defaults, which every adapter grants: 8 storage buffers a kernel, 16 KiB of workgroup
    /// memory, 256 invocations a workgroup.
    WebGpu,
}

impl Target {
    pub fn device(self) -> burn::tensor::Device {
        match (self.0, self.2) {
            (Backend::Wgpu, Limits::WebGpu) => webgpu_default_device(),
            (backend, _) => backend.device().unwrap(),
        }
    }

    /// Runs `f` with this target's GPU kernel shape.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        with_kernel_shape(self.1, f)
    }
}

/// This machine's adapter as a second wgpu device, requested with WebGPU's default limits and the
/// adapter's features (so that f16 kernels still run), once per test process.
fn webgpu_default_device() -> burn::tensor::Device {
    use burn::tensor::wgpu::{WgpuSetup, wgpu};
    static DEVICE: OnceLock<burn::tensor::Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let instance = wgpu::Instance::new(
                wgpu::InstanceDescriptor::new_without_display_handle_from_env(),
            );
            let adapter =
                block_on(instance.request_adapter(&Default::default())).expect("a wgpu adapter");
            let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                required_features: adapter.features() - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
                required_limits: wgpu::Limits::default(),
                ..Default::default()
            }))
            .expect("a device with WebGPU's default limits");
            let backend = adapter.get_info().backend;
            let setup = WgpuSetup {
                instance,
                adapter,
                device,
                queue,
                backend,
            };
            burn::tensor::Device::wgpu_options()
                .setup(setup)
                .init()
                .expect("burn takes the device")
        })
        .clone()
}

pub struct Golden(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Golden {
    pub fn open(name: &str) -> Self {
        let bytes = std::fs::read(fixtures().join(name)).expect("golden fixture exists");
        let tensors = SafeTensors::deserialize(&bytes).expect("golden fixture parses");
        Golden(
            tensors
                .iter()
                .map(|(k, v)| {
                    let values = v
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    (k.to_string(), (v.shape().to_vec(), values))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("golden tensor {name} exists"))
    }
}

/// `tests/fixtures/{name}_golden.json`.
pub fn golden_json(name: &str) -> serde_json::Value {
    let path = fixtures().join(format!("{name}_golden.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A JSON array of strings.
pub fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A JSON array of numbers as f32.
pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `len` int8 values over the whole range, and one of eleven scales for each block of 32: a quantised
/// weight whose every byte and scale position shows in the result.
pub fn int8_values_and_scales(len: usize) -> (Vec<i8>, Vec<f32>) {
    let values = (0..len)
        .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
        .collect();
    let scales = (0..len / 32)
        .map(|i| 0.002 + (i % 11) as f32 * 0.001)
        .collect();
    (values, scales)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
