//! The model's hot operations as burn backend extensions: our own kernels where burn's composed ops are
//! slow, burn's ops elsewhere (natively on the CPU, and under autodiff for training).
//!
//! - [`linear`]: `x·W + b` (+ GELU), every Linear layer.
//! - [`attention`]: softmax(QKᵀ/√d_k + mask)·V over all heads.
//! - [`disentangled`]: DeBERTa's c2p and p2c scores.
//! - [`add_norm`]: residual + LayerNorm.
//! - [`embeddings`]: word + segment + position embeddings, LayerNorm.
//! - [`geglu`]: the gated feed-forward's `GELU(input) · gate`.
//! - [`pool`]: sentence vectors (mean or `[CLS]`, L2-normalised).
//! - [`rotary`]: rotary position embeddings turning Q and K.
//! - [`top_k`]: fill-mask's softmax and best tokens.
//! - [`cpu`]: the browser's CPU path (WebAssembly SIMD128), behind the flex backend's impls.
//!
//! Linear, attention, Add & Norm and pooling come in two shapes, chosen per adapter ([`KernelShape`]);
//! the other kernels have one (a workgroup per row), and the `Serial` shape pools with burn's ops.

pub mod add_norm;
pub mod attention;
pub mod cpu;
pub mod disentangled;
pub mod embeddings;
pub mod geglu;
pub mod linear;
pub mod pool;
mod reduce;
pub mod rotary;
pub mod top_k;

use std::cell::Cell;

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Device, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::client::Client;
use cubecl::ir::ElemType;

/// How the GPU kernels are laid out over the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelShape {
    /// For CPU-backed adapters (SwiftShader in browsers, lavapipe natively: wgpu's `DeviceType::Cpu`):
    /// a few invocations, each looping over much work with no workgroup memory and no barrier, which is
    /// what a CPU runs fastest (the one-shape kernels, a workgroup per row, run as in `Tiled`).
    Serial,
    /// For real GPUs: enough workgroups to fill the device, tiles staged in workgroup memory, and
    /// reductions across a workgroup as a tree in workgroup memory, or with `subgroups` through
    /// subgroup operations where the adapter offers them.
    Tiled { subgroups: bool },
}

thread_local! {
    static FORCED: Cell<Option<KernelShape>> = const { Cell::new(None) };
}

impl KernelShape {
    /// The shape for this client's adapter, unless [`with_kernel_shape`], [`set_kernel_shape`] or,
    /// natively, `WEBBERT_KERNELS=serial|tiled|tiled-subgroups` asks for another.
    pub fn of(client: &Client) -> Self {
        if let Some(forced) = FORCED.with(Cell::get).or_else(from_env) {
            return forced;
        }
        // cubecl reports no physical card for a CPU-type adapter.
        if client.properties().identity.physical.is_none() {
            KernelShape::Serial
        } else {
            // Subgroup reductions were no faster in Chrome on the H100, and slower in calls of 128 to
            // 1,024 tokens (README, "On a real GPU"): they are asked for, never chosen.
            KernelShape::Tiled { subgroups: false }
        }
    }
}

impl std::str::FromStr for KernelShape {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "serial" => Ok(KernelShape::Serial),
            "tiled" => Ok(KernelShape::Tiled { subgroups: false }),
            "tiled-subgroups" => Ok(KernelShape::Tiled { subgroups: true }),
            other => Err(crate::Error::Input(format!(
                "kernels must be \"serial\", \"tiled\" or \"tiled-subgroups\", not {other:?}"
            ))),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn from_env() -> Option<KernelShape> {
    static ENV: std::sync::OnceLock<Option<KernelShape>> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| std::env::var("WEBBERT_KERNELS").ok()?.parse().ok())
}

#[cfg(target_arch = "wasm32")]
fn from_env() -> Option<KernelShape> {
    None
}

/// Every GPU kernel launched from this thread from now on in `shape` (`None`: the adapter's), whatever
/// the adapter: the browser's `kernels` load option, for comparing the shapes on one GPU.
pub fn set_kernel_shape(shape: Option<KernelShape>) {
    FORCED.with(|forced| forced.set(shape));
}

/// Runs `f` with every GPU kernel launched from this thread in `shape`, whatever the adapter: the
/// tests run both shapes on lavapipe, and the benches compare them on one GPU. Subgroups are used only
/// where the adapter has them, whatever `shape` says.
pub fn with_kernel_shape<T>(shape: KernelShape, f: impl FnOnce() -> T) -> T {
    let previous = FORCED.with(|forced| forced.replace(Some(shape)));
    let output = f();
    FORCED.with(|forced| forced.set(previous));
    output
}

/// Whether this client's kernels may use subgroup (plane) operations in the `Tiled` shape.
fn subgroups(client: &Client, shape: KernelShape) -> bool {
    matches!(shape, KernelShape::Tiled { subgroups: true })
        && client
            .properties()
            .features
            .plane
            .contains(cubecl::ir::features::Plane::Ops)
}

/// A new contiguous tensor beside `like`.
fn empty_like<const D: usize>(like: &CubeTensor, shape: [usize; D], dtype: DType) -> CubeTensor {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        dtype,
    )
}

/// What a layer lacks (ModernBERT's biases and LayerNorm β, DistilBERT's segment table) goes to the backend
/// extensions, which take no optional tensor, as an empty one: nothing is written or dispatched for it per
/// call, and the kernels are told at compile time to add nothing.
fn or_absent<const D: usize>(tensor: Option<Tensor<D>>, device: &Device) -> Tensor<D> {
    tensor.unwrap_or_else(|| Tensor::empty([0; D], device))
}

/// The tensor, or `None` where it stands for one the layer lacks ([`or_absent`]).
fn present<T: TensorMetadata>(tensor: T) -> Option<T> {
    (tensor.shape().num_elements() > 0).then_some(tensor)
}

/// A one-element tensor bound where a kernel takes an input it is told (at compile time) to ignore:
/// WebGPU refuses one buffer bound twice in a dispatch when either binding may be written.
fn placeholder(like: &CubeTensor) -> CubeTensor {
    empty_like(like, [1], like.dtype)
}

/// The binding of an input the layer may lack, and whether the kernel reads it: the tensor (contiguous),
/// or a [`placeholder`] beside `like` that the kernel, told so at compile time, never reads.
fn optional(tensor: Option<CubeTensor>, like: &CubeTensor) -> (CubeTensor, bool) {
    match tensor {
        Some(tensor) => (into_contiguous(tensor), true),
        None => (placeholder(like), false),
    }
}

/// For every (a, b) in `0..seq` × `0..seq`, row-major, the index of `a − b` in the `2 × seq − 1` distances
/// from `1 − seq` up: relative positions depend on the distance alone, so they come as such a table.
pub fn distance_index(seq: usize) -> impl Iterator<Item = usize> {
    (0..seq).flat_map(move |a| (0..seq).map(move |b| a + seq - 1 - b))
}

/// The workgroup memory of variables of `words` elements `element` bytes each, as WebGPU counts it (each
/// rounded up to 16 bytes), to hold against the device's limit (browsers and lavapipe allow 32 KiB).
fn workgroup_bytes(element: usize, words: &[usize]) -> usize {
    words
        .iter()
        .map(|n| (n * element).next_multiple_of(16))
        .sum()
}

fn storage(dtype: DType) -> ElemType {
    burn::backend::cubecl::dtype_to_storage_type(dtype)
}
