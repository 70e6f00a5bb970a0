//! "Add & Norm": `LayerNorm(x + residual)` after every attention block and feed-forward network, with the
//! Linear before it (`dense_add_norm`), and `LayerNorm(x)` alone (the masked-LM head; ModernBERT's embeddings,
//! pre-norms and final norm), as GPU kernels.
//!
//! Why: burn's cube backend composes LayerNorm from ~9 ops (two reductions and the element-wise steps),
//! plus one for the residual add: 10 dispatches, 13 times per MiniLM forward. Mean, then variance about
//! it, as PyTorch does. Two GPU shapes ([`KernelShape`]): `Serial`, one invocation per row with no
//! barrier; `Tiled`, one workgroup per row, its units sharing the row and reducing together. In the
//! `Tiled` shape the Linear before it hands over its partial sums (one per slice of its depth, see
//! [`super::linear::plan`]) and this kernel adds them up with the bias: no kernel in between. The CPU
//! (flex, whose `layer_norm` is already one pass) and autodiff keep burn's ops.

use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension};
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{DType, FloatDType, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use super::linear::{self, LinearBackend, Weight, tiled_sums};
use super::{KernelShape, empty_like, optional, or_absent, present, storage, subgroups};

const WORKGROUP: u32 = 64;
/// `Tiled`: units sharing one row.
pub(crate) const ROW_UNITS: usize = 128;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait AddNormBackend: Backend {
    /// `input`, `residual` `[rows, hidden]`; `gamma`, `beta` `[hidden]` (`beta` empty where the LayerNorm
    /// has none, see [`super::or_absent`]) → `LayerNorm(input + residual)` `[rows, hidden]`.
    fn add_norm(
        input: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(
            Self::float_add(input, residual),
            gamma,
            present(beta),
            epsilon,
        )
    }

    /// `LayerNorm(input·weight + bias + residual)`: `input` `[rows, in]`, `weight` `[in, hidden]`, `bias`
    /// `[hidden]` (or empty).
    #[allow(clippy::too_many_arguments)]
    fn dense_add_norm(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let dense = linear::composed::<Self>(input, weight, present(bias), false);
        Self::add_norm(dense, residual, gamma, beta, epsilon)
    }

    /// The same with int8 weights (a q8 model, see [`LinearBackend::q8_linear`]); elsewhere the weight
    /// is widened for the call.
    #[allow(clippy::too_many_arguments)]
    fn q8_dense_add_norm(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let weight = Self::dequantize(weight, FloatDType::F32);
        Self::dense_add_norm(input, weight, bias, residual, gamma, beta, epsilon)
    }

    /// `LayerNorm(input)`, as [`add_norm`](Self::add_norm) without the residual.
    fn norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(input, gamma, present(beta), epsilon)
    }
}

/// The browser's CPU path takes the Linear through its own kernel ([`LinearBackend`]).
impl AddNormBackend for Flex {
    fn dense_add_norm(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let dense = <Self as LinearBackend>::linear(input, weight, bias, false);
        Self::add_norm(dense, residual, gamma, beta, epsilon)
    }

    fn q8_dense_add_norm(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let dense = <Self as LinearBackend>::q8_linear(input, weight, bias, false);
        Self::add_norm(dense, residual, gamma, beta, epsilon)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: AddNormBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    AddNormBackend for burn::backend::Autodiff<B, C>
{
}

impl AddNormBackend for Cube {
    fn add_norm(
        input: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let input = into_contiguous(input);
        let sums = Sums::one(input);
        launch(sums, None, Some(residual), gamma, present(beta), epsilon)
    }

    fn dense_add_norm(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        // `Serial`: the Linear kernel, then this one. `Tiled`: the Linear's partial sums, added up here.
        let (input, weight) = (into_contiguous(input), Weight::of(weight));
        match KernelShape::of(&input.client) {
            KernelShape::Serial => {
                let dense = linear::gpu_linear(input, weight, present(bias), false, None);
                Self::add_norm(dense, residual, gamma, beta, epsilon)
            }
            KernelShape::Tiled { .. } => {
                let (partial, splits) = tiled_sums(input, weight, None);
                let sums = Sums { partial, splits };
                let (bias, beta) = (present(bias), present(beta));
                launch(sums, bias, Some(residual), gamma, beta, epsilon)
            }
        }
    }

    fn q8_dense_add_norm(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        // The same `CubeTensor` as a float weight: `Weight::of` reads its dtype.
        Self::dense_add_norm(input, weight, bias, residual, gamma, beta, epsilon)
    }

    fn norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let input = into_contiguous(input);
        launch(Sums::one(input), None, None, gamma, present(beta), epsilon)
    }
}

/// What the kernel normalises before the bias and residual: the sum of `splits` partial results laid
/// one after the other (`[splits, rows, hidden]`).
struct Sums {
    partial: CubeTensor,
    splits: usize,
}

impl Sums {
    fn one(input: CubeTensor) -> Self {
        Self {
            partial: input,
            splits: 1,
        }
    }
}

fn launch(
    sums: Sums,
    bias: Option<CubeTensor>,
    residual: Option<CubeTensor>,
    gamma: CubeTensor,
    beta: Option<CubeTensor>,
    epsilon: f64,
) -> CubeTensor {
    let Sums { partial, splits } = sums;
    let dims = partial.meta.shape();
    let [rows, hidden] = [dims[dims.len() - 2], dims[dims.len() - 1]];
    let gamma = into_contiguous(gamma);
    let (bias, has_bias) = optional(bias, &partial);
    let (residual, has_residual) = optional(residual, &partial);
    let (beta, has_beta) = optional(beta, &partial);
    let output = empty_like(&partial, [rows, hidden], partial.dtype);
    let shape = KernelShape::of(&partial.client);
    let (count, dim, units) = match shape {
        KernelShape::Serial => (
            CubeCount::Static((rows as u32).div_ceil(WORKGROUP), 1, 1),
            CubeDim::new_1d(WORKGROUP),
            1,
        ),
        KernelShape::Tiled { .. } => (row_grid(rows), CubeDim::new_1d(ROW_UNITS as u32), ROW_UNITS),
    };
    kernel::add_norm_kernel::launch(
        &output.client,
        count,
        dim,
        partial.into_tensor_arg(),
        bias.into_tensor_arg(),
        residual.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        splits,
        epsilon as f32,
        has_bias,
        has_residual,
        has_beta,
        units,
        hidden.div_ceil(units),
        subgroups(&output.client, shape),
        storage(output.dtype),
    );
    output
}

/// One workgroup per row, rows laid out over two grid dimensions (WebGPU allows 65,535 per dimension).
pub(crate) fn row_grid(rows: usize) -> CubeCount {
    let x = rows.min(65_535);
    CubeCount::Static(x as u32, rows.div_ceil(x) as u32, 1)
}

pub(crate) mod kernel {
    use cubecl::prelude::*;

    use crate::ops::reduce::workgroup_sum;

    /// `units == 1`: each invocation normalises row `ABSOLUTE_POS` alone. Otherwise each workgroup
    /// normalises one row, each unit holding `per_unit` of its values in registers.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn add_norm_kernel<F: Float>(
        partial: &Tensor<F>,
        bias: &Tensor<F>,
        residual: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        splits: usize,
        epsilon: f32,
        #[comptime] has_bias: bool,
        #[comptime] has_residual: bool,
        #[comptime] has_beta: bool,
        #[comptime] units: usize,
        #[comptime] per_unit: usize,
        #[comptime] subgroups: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let rows = output.shape(0);
        let hidden = output.shape(1);
        if units == 1 {
            if ABSOLUTE_POS >= rows {
                terminate!();
            }
            let start = ABSOLUTE_POS * hidden;
            let mut sum = F::new(0.0);
            for k in 0..hidden {
                sum += term(
                    partial,
                    bias,
                    residual,
                    start,
                    k,
                    splits,
                    rows * hidden,
                    has_bias,
                    has_residual,
                );
            }
            let mean = sum / F::cast_from(hidden as u32);
            let mut squares = F::new(0.0);
            for k in 0..hidden {
                let centred = term(
                    partial,
                    bias,
                    residual,
                    start,
                    k,
                    splits,
                    rows * hidden,
                    has_bias,
                    has_residual,
                ) - mean;
                squares += centred * centred;
            }
            let inv_std = F::new(1.0)
                / (squares / F::cast_from(hidden as u32) + F::cast_from(epsilon)).sqrt();
            for k in 0..hidden {
                let centred = term(
                    partial,
                    bias,
                    residual,
                    start,
                    k,
                    splits,
                    rows * hidden,
                    has_bias,
                    has_residual,
                ) - mean;
                output[start + k] = shift(centred * inv_std * gamma[k], beta, k, has_beta);
            }
        } else {
            let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
            // Uniform across the workgroup, so no unit misses a barrier.
            if row >= rows {
                terminate!();
            }
            let start = row * hidden;
            let mut x = Array::<F>::new(per_unit);
            #[unroll]
            for i in 0..per_unit {
                let k = UNIT_POS as usize + i * units;
                let value = term(
                    partial,
                    bias,
                    residual,
                    start,
                    min(k, hidden - 1),
                    splits,
                    rows * hidden,
                    has_bias,
                    has_residual,
                );
                x[i] = select(k < hidden, value, F::new(0.0));
            }
            store_row_norm(
                &mut x, output, gamma, beta, start, epsilon, has_beta, units, per_unit, subgroups,
            );
        }
    }

    /// Column `k` of the row at `start`: the partial sums, then the bias, then the residual (the order
    /// PyTorch adds them in).
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn term<F: Float>(
        partial: &Tensor<F>,
        bias: &Tensor<F>,
        residual: &Tensor<F>,
        start: usize,
        k: usize,
        splits: usize,
        slice: usize,
        #[comptime] has_bias: bool,
        #[comptime] has_residual: bool,
    ) -> F {
        let mut value = partial[start + k];
        for s in 1..splits {
            value += partial[s * slice + start + k];
        }
        if has_bias {
            value += bias[k];
        }
        if has_residual {
            value += residual[start + k];
        }
        value
    }

    /// Writes `LayerNorm` of the row whose `hidden` values the workgroup's units hold in `x` (unit `u`
    /// holds columns `u`, `u + units`, …; zeros past the end) to `output[start..]`, `beta` added where
    /// `has_beta`.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    pub fn store_row_norm<F: Float>(
        x: &mut Array<F>,
        output: &mut Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        start: usize,
        epsilon: f32,
        #[comptime] has_beta: bool,
        #[comptime] units: usize,
        #[comptime] per_unit: usize,
        #[comptime] subgroups: bool,
    ) {
        let hidden = output.shape(1);
        let width = F::cast_from(hidden as u32);
        let mut scratch = Shared::<[F]>::new_slice(units);
        let mut sum = F::new(0.0);
        #[unroll]
        for i in 0..per_unit {
            sum += x[i];
        }
        let mean = workgroup_sum::<F>(sum, &mut scratch, units, subgroups) / width;
        let mut squares = F::new(0.0);
        #[unroll]
        for i in 0..per_unit {
            let k = UNIT_POS as usize + i * units;
            let centred = select(k < hidden, x[i] - mean, F::new(0.0));
            x[i] = centred;
            squares += centred * centred;
        }
        let variance = workgroup_sum::<F>(squares, &mut scratch, units, subgroups) / width;
        let inv_std = F::new(1.0) / (variance + F::cast_from(epsilon)).sqrt();
        #[unroll]
        for i in 0..per_unit {
            let k = UNIT_POS as usize + i * units;
            if k < hidden {
                output[start + k] = shift(x[i] * inv_std * gamma[k], beta, k, has_beta);
            }
        }
    }

    /// `scaled + beta[k]`, or `scaled` for a LayerNorm without β.
    #[cube]
    pub fn shift<F: Float>(scaled: F, beta: &Tensor<F>, k: usize, #[comptime] has_beta: bool) -> F {
        let mut value = scaled;
        if has_beta {
            value += beta[k];
        }
        value
    }
}

/// The LayerNorm's β, or an empty tensor where it has none.
fn beta(layer_norm: &LayerNorm, like: &Tensor<2>) -> Tensor<1> {
    let beta = layer_norm.beta.as_ref().map(|beta| beta.val());
    or_absent(beta, &like.device())
}

/// `layer_norm(input + residual)` for `[batch, seq, hidden]` tensors; `epsilon` is the config's
/// `layer_norm_eps` (burn's `LayerNorm` keeps its own private).
pub fn add_norm(
    layer_norm: &LayerNorm,
    epsilon: f64,
    input: Tensor<3>,
    residual: Tensor<3>,
) -> Tensor<3> {
    let [batch, seq, hidden] = input.dims();
    let input = input.reshape([batch * seq, hidden]);
    let beta = beta(layer_norm, &input);
    Tensor::<2>::from_dispatch(Dispatch::add_norm(
        input.into_dispatch(),
        residual.reshape([batch * seq, hidden]).into_dispatch(),
        layer_norm.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
    .reshape([batch, seq, hidden])
}

/// `layer_norm(dense(input) + residual)` for `[batch, seq, ..]` tensors: BERT's `…Output` blocks.
pub fn dense_add_norm(
    dense: &Linear,
    layer_norm: &LayerNorm,
    epsilon: f64,
    input: Tensor<3>,
    residual: Tensor<3>,
) -> Tensor<3> {
    let [batch, seq, width] = input.dims();
    let hidden = residual.dims()[2];
    let input = input.reshape([batch * seq, width]);
    let bias = or_absent(dense.bias.as_ref().map(|bias| bias.val()), &input.device());
    let weight = dense.weight.val();
    let beta = beta(layer_norm, &input);
    let dense_add_norm = match weight.dtype() {
        DType::QFloat(_) => Dispatch::q8_dense_add_norm,
        _ => Dispatch::dense_add_norm,
    };
    Tensor::<2>::from_dispatch(dense_add_norm(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        residual.reshape([batch * seq, hidden]).into_dispatch(),
        layer_norm.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
    .reshape([batch, seq, hidden])
}

/// `layer_norm(input)` over the last dimension (rows of `[.., hidden]`).
pub fn norm<const D: usize>(layer_norm: &LayerNorm, epsilon: f64, input: Tensor<D>) -> Tensor<D> {
    let dims = input.dims();
    let input = input.reshape([dims[..D - 1].iter().product(), dims[D - 1]]);
    let beta = beta(layer_norm, &input);
    Tensor::<2>::from_dispatch(Dispatch::norm(
        input.into_dispatch(),
        layer_norm.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
    .reshape(dims)
}
