//! Sentence vectors from token vectors: mean over the real tokens (or the `[CLS]` vector), then
//! optionally scaled to unit length, as one GPU kernel.
//!
//! Why: composed of burn's ops, mean pooling and the L2 norm are eight dispatches after the encoder's
//! last layer. Here one workgroup per text sums its token vectors (its units spread over tokens and
//! columns) and reduces the squared norm across the workgroup. Flex, autodiff and CPU-backed adapters
//! (the `Serial` shape) compose burn's ops.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Slice, Tensor};
use burn_cubecl::kernel::into_contiguous;
use cubecl::{CubeCount, CubeDim};

use super::{KernelShape, empty_like, storage, subgroups, workgroup_bytes};

const UNITS: usize = 256;
/// Widest vector the kernel takes: each unit holds `width / 32` partial sums in registers.
const MAX_WIDTH: usize = 1024;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait PoolBackend: Backend {
    /// `hidden` `[batch, seq, width]`, `attention_mask` `[batch, seq]` (1 for tokens, 0 for padding) →
    /// `[batch, width]`: the mean of the tokens' vectors (`mean`) or the first token's, then divided by
    /// its L2 norm (at least 1e-12, as `torch.nn.functional.normalize`) when `normalize`.
    fn pool(
        hidden: FloatTensor<Self>,
        attention_mask: FloatTensor<Self>,
        mean: bool,
        normalize: bool,
    ) -> FloatTensor<Self> {
        composed::<Self>(hidden, attention_mask, mean, normalize)
    }
}

/// The same with burn's ops.
fn composed<B: Backend>(
    hidden: FloatTensor<B>,
    attention_mask: FloatTensor<B>,
    mean: bool,
    normalize: bool,
) -> FloatTensor<B> {
    let [batch, seq, width] = hidden.shape().dims();
    let pooled = if mean {
        let mask = B::float_reshape(attention_mask.clone(), Shape::new([batch, seq, 1]));
        let summed = B::float_sum_dim(B::float_mul(hidden, mask), 1);
        let counts = B::float_sum_dim(attention_mask, 1);
        B::float_div(B::float_reshape(summed, Shape::new([batch, width])), counts)
    } else {
        let first = [Slice::full(), Slice::from(0..1), Slice::full()];
        B::float_reshape(B::float_slice(hidden, &first), Shape::new([batch, width]))
    };
    if !normalize {
        return pooled;
    }
    let squares = B::float_sum_dim(B::float_powi_scalar(pooled.clone(), 2.into()), 1);
    let norm = B::float_clamp_min(B::float_sqrt(squares), 1e-12.into());
    B::float_div(pooled, norm)
}

impl PoolBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: PoolBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    PoolBackend for burn::backend::Autodiff<B, C>
{
}

impl PoolBackend for Cube {
    fn pool(
        hidden: FloatTensor<Self>,
        attention_mask: FloatTensor<Self>,
        mean: bool,
        normalize: bool,
    ) -> FloatTensor<Self> {
        let [batch, _, width] = hidden.meta.shape().dims();
        let shape = KernelShape::of(&hidden.client);
        // The groups' partial sums (8 × width), the token counts and the norm's scratch: at width 1,024,
        // 34 KiB, over most browsers' 32.
        let words = [UNITS / 32 * width.div_ceil(32) * 32, UNITS, UNITS];
        let bytes = workgroup_bytes(hidden.dtype.size(), &words);
        let fits = bytes <= hidden.client.properties().hardware.max_shared_memory_size;
        // CPU-backed adapters take burn's ops: SwiftShader spent ~1 s compiling this kernel (its unrolled
        // loops) on the first call, for a few milliseconds saved per call.
        if width > MAX_WIDTH || !fits || shape == KernelShape::Serial {
            return composed::<Self>(hidden, attention_mask, mean, normalize);
        }
        let [hidden, attention_mask] = [hidden, attention_mask].map(into_contiguous);
        let output = empty_like(&hidden, [batch, width], hidden.dtype);
        let subgroups = subgroups(&hidden.client, shape);
        kernel::pool_kernel::launch(
            &output.client,
            CubeCount::Static(batch as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            hidden.into_tensor_arg(),
            attention_mask.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            mean,
            normalize,
            UNITS,
            width.div_ceil(32),
            width.div_ceil(UNITS),
            subgroups,
            storage(output.dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    use crate::ops::reduce::workgroup_sum;

    /// One workgroup per text. For the mean, unit `u` sums the tokens `u / 32`, `u / 32 + groups`, …
    /// in columns `u % 32`, `u % 32 + 32`, … (`per_lane` of them), so that the tokens are read by all
    /// units at once; the groups' partial sums then meet in workgroup memory, each unit totalling
    /// `per_unit` columns.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn pool_kernel<F: Float>(
        hidden: &Tensor<F>,
        attention_mask: &Tensor<F>,
        output: &mut Tensor<F>,
        #[comptime] mean: bool,
        #[comptime] normalize: bool,
        #[comptime] units: usize,
        #[comptime] per_lane: usize,
        #[comptime] per_unit: usize,
        #[comptime] subgroups: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = hidden.shape(1);
        let width = hidden.shape(2);
        let b = CUBE_POS_X as usize;
        let unit = UNIT_POS as usize;
        let lanes = comptime!(32usize);
        let groups = units / lanes;
        let mut x = Array::<F>::new(per_unit);
        if mean {
            let (lane, group) = (unit % lanes, unit / lanes);
            let mut partial = Array::<F>::new(per_lane);
            #[unroll]
            for j in 0..per_lane {
                partial[j] = F::new(0.0);
            }
            let mut count = F::new(0.0);
            let mut s = group;
            while s < seq {
                let token = attention_mask[b * seq + s];
                count += token;
                let row = (b * seq + s) * width;
                #[unroll]
                for j in 0..per_lane {
                    partial[j] += hidden[row + min(lane + j * lanes, width - 1)] * token;
                }
                s += groups;
            }
            let mut sums = Shared::<[F]>::new_slice(groups * per_lane * lanes);
            #[unroll]
            for j in 0..per_lane {
                sums[(group * per_lane + j) * lanes + lane] = partial[j];
            }
            let mut counts = Shared::<[F]>::new_slice(units);
            counts[unit] = count;
            sync_cube();
            let mut total_count = F::new(0.0);
            for g in 0..groups {
                total_count += counts[g * lanes];
            }
            #[unroll]
            for i in 0..per_unit {
                let c = min(unit + i * units, width - 1);
                let (j, lane) = (c / lanes, c % lanes);
                let mut total = F::new(0.0);
                for g in 0..groups {
                    total += sums[(g * per_lane + j) * lanes + lane];
                }
                x[i] = total / total_count;
            }
        } else {
            #[unroll]
            for i in 0..per_unit {
                x[i] = hidden[b * seq * width + min(unit + i * units, width - 1)];
            }
        }
        let mut divisor = F::new(1.0);
        if normalize {
            let mut squares = F::new(0.0);
            #[unroll]
            for i in 0..per_unit {
                squares += select(unit + i * units < width, x[i] * x[i], F::new(0.0));
            }
            let mut scratch = Shared::<[F]>::new_slice(units);
            let norm = workgroup_sum::<F>(squares, &mut scratch, units, subgroups).sqrt();
            divisor = F::max(norm, F::new(1e-12));
        }
        #[unroll]
        for i in 0..per_unit {
            let c = unit + i * units;
            if c < width {
                output[b * width + c] = x[i] / divisor;
            }
        }
    }
}

/// `hidden` `[batch, seq, width]`, `attention_mask` `[batch, seq]` → `[batch, width]` (see
/// [`PoolBackend::pool`]).
pub fn pool(
    hidden: Tensor<3>,
    attention_mask: Tensor<2>,
    mean: bool,
    normalize: bool,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::pool(
        hidden.into_dispatch(),
        attention_mask.into_dispatch(),
        mean,
        normalize,
    ))
}
