//! Every Linear layer of the model, `x·W + b` (optionally followed by GELU), as one GPU kernel.
//!
//! Why our own kernel: without autotune (whose candidates fail WGSL validation in Chrome), burn's wgpu
//! backend runs cubecl's general matmul, which stages tiles through workgroup memory behind barriers.
//! Profiled on WebGPU (SwiftShader), its 36 dispatches per MiniLM forward took 3.8 s of 4.4 s. Two
//! shapes ([`KernelShape`]): the [`serial`] kernel needs no shared memory and no barrier, each
//! invocation accumulating an 8×8 output tile in registers from `x` rows and `W` columns that its
//! neighbours also read (so caches serve them); the [`tiled`] kernel stages tiles of both in workgroup
//! memory, enough workgroups to fill a GPU (see [`plan`]). Both read the weight as it is stored
//! ([`weight`]: f32, or f16 and int8 unpacked in the kernel) and add the bias (and GELU) before their
//! single write. In the browser's CPU path the same job goes to [`super::cpu`] ([`flex`]); natively on
//! the CPU and under autodiff the trait's default body composes burn's own ops, so training is unchanged.

mod flex;
mod serial;
mod tiled;
pub(crate) mod weight;

#[cfg(test)]
pub(crate) use flex::int8_test_tensor;
pub(crate) use tiled::tiled_sums;
pub use tiled::{LARGE_ROWS, LARGE_TILE, Plan, TILES, TRIAL_TILES, Tile, plan, with_plan};
pub(crate) use weight::Weight;

use burn::backend::TensorMetadata;
use burn::backend::ops::{FloatTensorOps, QTensorOps};
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, FloatDType, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::{FlexQTensor, FlexTensor};

use super::cpu::q8::BLOCK as Q8_BLOCK;
use super::{KernelShape, empty_like, or_absent, present};

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait LinearBackend: Backend {
    /// `input` `[rows, in]`, `weight` `[in, out]` (any strides), `bias` `[out]` (empty, `[0]`, where the
    /// layer has none: see [`super::or_absent`]) → `[rows, out]`.
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        composed::<Self>(input, weight, present(bias), gelu)
    }

    /// The same with int8 weights (a q8 model): burn's block quantisation, one scale per [`Q8_BLOCK`]
    /// values of a column, as [`q8_scheme`] lays it out. Elsewhere the weight is widened for the call.
    fn q8_linear(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        let weight = Self::dequantize(weight, FloatDType::F32);
        composed::<Self>(input, weight, present(bias), gelu)
    }

    /// `input·weight + bias + residual` (`residual` `[rows, out]`): a pre-norm layer's sublayer output
    /// added to the residual stream. On a GPU the kernel adds it as it writes (one dispatch, not two).
    fn linear_add(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_add(
            <Self as LinearBackend>::linear(input, weight, bias, false),
            residual,
        )
    }

    /// `input·weightᵀ + bias` from int8 weights stored `[out, in]` in [`q8_table_scheme`] (the tied MLM
    /// decoder reading a q8 word table), read as they are stored.
    fn q8_linear_transposed(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let weight = Self::float_transpose(Self::dequantize(weight, FloatDType::F32));
        composed::<Self>(input, weight, present(bias), false)
    }

    /// The same with int8 weights.
    fn q8_linear_add(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_add(Self::q8_linear(input, weight, bias, false), residual)
    }
}

/// How a q8 model's Linear weights are held: int8 with an f32 scale per block of [`Q8_BLOCK`] rows of
/// a column (the `in` axis, along which the products are summed). On the CPU one byte per value; on a
/// GPU (`packed`) four neighbouring columns' values in one `u32`, as WebGPU has no 8-bit storage.
pub fn q8_scheme(packed: bool) -> QuantScheme {
    q8_blocks(packed, [Q8_BLOCK as u8, 1])
}

/// How a q8 model's word-embedding table `[vocab, width]` is held: as the checkpoint stores it, blocks
/// of [`Q8_BLOCK`] along each row. A row is a token's vector for the lookup, and for the tied decoder
/// (`[out, in]`) a column's weights along the depth: its blocks are where [`q8_scheme`]'s are.
pub fn q8_table_scheme(packed: bool) -> QuantScheme {
    q8_blocks(packed, [1, Q8_BLOCK as u8])
}

fn q8_blocks(packed: bool, block: [u8; 2]) -> QuantScheme {
    let store = match packed {
        true => QuantStore::PackedU32(0),
        false => QuantStore::Native,
    };
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(store)
        .per_block(block, ScaleDtype::F32)
}

/// The same with burn's own ops (autodiff, and shapes or dtypes our kernels do not take).
pub(crate) fn composed<B: Backend>(
    input: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    gelu: bool,
) -> FloatTensor<B> {
    let product = B::float_matmul(input, weight);
    let output = match bias {
        Some(bias) => {
            let out = bias.shape()[0];
            B::float_add(product, B::float_reshape(bias, Shape::new([1, out])))
        }
        None => product,
    };
    if gelu { B::gelu(output) } else { output }
}

/// On the CPU path in the browser, our single-threaded SIMD kernel ([`super::cpu`]); natively
/// flex's gemm runs on all cores.
impl LinearBackend for Flex {
    fn linear(input: FlexTensor, weight: FlexTensor, bias: FlexTensor, gelu: bool) -> FlexTensor {
        let bias = present(bias);
        if cfg!(target_arch = "wasm32")
            && let Some(output) = flex::linear(&input, &weight, bias.as_ref(), gelu)
        {
            return output;
        }
        composed::<Self>(input, weight, bias, gelu)
    }

    fn q8_linear(
        input: FlexTensor,
        weight: FlexQTensor,
        bias: FlexTensor,
        gelu: bool,
    ) -> FlexTensor {
        let bias = present(bias);
        if let Some(output) = flex::q8_linear(&input, &weight, bias.as_ref(), gelu) {
            return output;
        }
        composed::<Self>(input, Self::dequantize(weight, FloatDType::F32), bias, gelu)
    }

    fn q8_linear_transposed(
        input: FlexTensor,
        weight: FlexQTensor,
        bias: FlexTensor,
    ) -> FlexTensor {
        let bias = present(bias);
        if let Some(output) = flex::q8_linear_transposed(&input, &weight, bias.as_ref()) {
            return output;
        }
        let weight = Self::float_transpose(Self::dequantize(weight, FloatDType::F32));
        composed::<Self>(input, weight, bias, false)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: LinearBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    LinearBackend for burn::backend::Autodiff<B, C>
{
}

impl LinearBackend for Cube {
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        gpu_linear(input, Weight::of(weight), present(bias), gelu, None)
    }

    fn q8_linear(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        // The same `CubeTensor` as a float weight: `Weight::of` reads its dtype.
        Self::linear(input, weight, bias, gelu)
    }

    fn q8_linear_transposed(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // `Weight::of` reads the table's scheme: `[out, in]`, blocks along `in`.
        Self::linear(input, weight, bias, false)
    }

    fn linear_add(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        gpu_linear(
            input,
            Weight::of(weight),
            present(bias),
            false,
            Some(residual),
        )
    }

    fn q8_linear_add(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_add(input, weight, bias, residual)
    }
}

/// What the kernels do as they write a finished product: add the bias (where the layer has one), then
/// GELU (`gelu`), then, where `residual` is given (`[rows, out]`), add it (the kernels write into its
/// buffer and read it back).
pub(crate) struct Finish {
    bias: Option<CubeTensor>,
    gelu: bool,
    residual: Option<CubeTensor>,
}

impl Finish {
    /// The output buffer `[rows, cols]`: the residual's own when no other tensor holds it, else a copy
    /// of it, or a new one; and whether the kernel adds what it holds.
    fn output(&mut self, input: &CubeTensor, rows: usize, cols: usize) -> (CubeTensor, bool) {
        match self.residual.take().map(into_contiguous) {
            Some(residual) if residual.can_mut() => (residual, true),
            Some(residual) => (residual.copy(), true),
            None => (empty_like(input, [rows, cols], input.dtype), false),
        }
    }
}

/// `input·weight`, finished as it is written, by the adapter's kernel shape.
pub(crate) fn gpu_linear(
    input: CubeTensor,
    weight: Weight,
    bias: Option<CubeTensor>,
    gelu: bool,
    residual: Option<CubeTensor>,
) -> CubeTensor {
    let input = into_contiguous(input);
    let finish = Finish {
        bias,
        gelu,
        residual,
    };
    match KernelShape::of(&input.client) {
        KernelShape::Serial => serial::serial(input, weight, finish),
        KernelShape::Tiled { .. } => tiled_sums(input, weight, Some(finish)).0,
    }
}

pub(crate) mod kernel {
    use cubecl::prelude::*;

    /// Hugging Face's "gelu": x·Φ(x) with the exact erf.
    #[cube]
    pub fn gelu_erf<F: Float>(x: F) -> F {
        x * F::new(0.5) * (F::new(1.0) + (x * F::new(0.70710677)).erf())
    }
}

/// A burn `Linear` (weight `[in, out]`) on `input` `[.., in]`, GELU fused when `gelu`.
pub fn linear<const D: usize>(layer: &Linear, input: Tensor<D>, gelu: bool) -> Tensor<D> {
    let (rows, bias, dims) = flat(layer, input);
    affine(rows, layer.weight.val(), bias, gelu).reshape(dims)
}

/// `residual + layer(input)`, the sum made as the Linear writes its output: a pre-norm layer's residual.
pub fn linear_add<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
    residual: Tensor<D>,
) -> Tensor<D> {
    let device = input.device();
    let (rows, bias, dims) = flat(layer, input);
    let residual = residual
        .reshape([rows.dims()[0], dims[D - 1]])
        .into_dispatch();
    let weight = layer.weight.val();
    let quantized = matches!(weight.dtype(), DType::QFloat(_));
    let (input, weight, bias) = (
        rows.into_dispatch(),
        weight.into_dispatch(),
        or_absent(bias, &device).into_dispatch(),
    );
    Tensor::<2>::from_dispatch(match quantized {
        true => Dispatch::q8_linear_add(input, weight, bias, residual),
        false => Dispatch::linear_add(input, weight, bias, residual),
    })
    .reshape(dims)
}

/// `input` as rows `[.., in]` → `[rows, in]`, the layer's bias (if it has one) and the output's dims.
fn flat<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
) -> (Tensor<2>, Option<Tensor<1>>, [usize; D]) {
    let mut dims = input.dims();
    let [width, out] = layer.weight.dims();
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    let rows = input.reshape([dims[..D - 1].iter().product(), width]);
    dims[D - 1] = out;
    (rows, bias, dims)
}

/// Columns `columns` of a Linear's output only: the weight and bias narrowed as views, so that the
/// other columns are never computed. A packed (f16 or int8) weight computes them all, then keeps those.
pub fn linear_columns<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
    columns: std::ops::Range<usize>,
) -> Tensor<D> {
    let (start, len) = (columns.start, columns.len());
    let weight = layer.weight.val();
    if weight.dtype() != DType::F32 {
        return linear(layer, input, false).narrow(D - 1, start, len);
    }
    let narrowed = Linear {
        weight: burn::module::Param::from_tensor(weight.narrow(1, start, len)),
        bias: layer
            .bias
            .as_ref()
            .map(|b| burn::module::Param::from_tensor(b.val().narrow(0, start, len))),
    };
    linear(&narrowed, input, false)
}

/// `input·weightᵀ + bias` with `weight` `[out, in]` (PyTorch's layout; the tied MLM decoder's word
/// table): a float weight through a transposed view, an int8 one as stored.
pub fn affine_transposed(
    input: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<2> {
    if !matches!(weight.dtype(), DType::QFloat(_)) {
        return affine(input, weight.transpose(), bias, false);
    }
    let bias = or_absent(bias, &input.device()).into_dispatch();
    Tensor::from_dispatch(Dispatch::q8_linear_transposed(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias,
    ))
}

/// `input·weight + bias` (then GELU when `gelu`): `input` `[rows, in]`, `weight` `[in, out]`, possibly a
/// transposed view, `bias` `[out]` or none.
pub fn affine(
    input: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    gelu: bool,
) -> Tensor<2> {
    let bias = or_absent(bias, &input.device()).into_dispatch();
    let input = input.into_dispatch();
    Tensor::from_dispatch(match weight.dtype() {
        DType::QFloat(_) => Dispatch::q8_linear(input, weight.into_dispatch(), bias, gelu),
        _ => Dispatch::linear(input, weight.into_dispatch(), bias, gelu),
    })
}
