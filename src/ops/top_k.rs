//! Fill-mask's last step: the `k` most likely tokens of each masked position, with their softmax
//! probabilities, so that only `2k` numbers per mask come back from the device instead of the whole
//! vocabulary's.
//!
//! Why: burn's softmax over 30,522 logits is two reductions that each ran on a few workgroups (0.83 +
//! 0.69 ms on an H100), and the whole row was then read back to be sorted on the CPU. Here one workgroup
//! per row finds the maximum and the softmax denominator, then the `k` best tokens one pass at a time,
//! each pass taking the best after the previous one in the order (score descending, id ascending): the
//! same order, ties included, as the CPU's selection. Up to [`MAX_GPU_K`]; beyond it burn sorts the row,
//! which on a GPU reads it back synchronously: a browser cannot, so fill-mask reads the logits back itself
//! and selects on the host ([`softmax_top_k_host`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{IntDType, Shape, Slice, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_flex::FlexTensor;
use cubecl::{CubeCount, CubeDim};

use super::{KernelShape, empty_like, storage, subgroups};

/// Largest `k` the GPU kernel takes: each of its `k` passes reads the whole row.
pub const MAX_GPU_K: usize = 64;
const UNITS: usize = 256;

#[backend_extension(Cube, Flex)]
pub trait TopKBackend: Backend {
    /// `logits` `[rows, vocab]` → `[rows, 2k]`: per row the `k` largest softmax probabilities, largest
    /// first (ties: lower id first), then their token ids as floats (exact below 2²⁴).
    fn softmax_top_k(logits: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        sorted::<Self>(logits, k)
    }
}

/// burn's ops: softmax, a full sort of each row, the first `k`.
fn sorted<B: Backend>(logits: FloatTensor<B>, k: usize) -> FloatTensor<B> {
    let [rows, _] = logits.shape().dims();
    let max = B::float_max_dim(logits.clone(), 1);
    let exp = B::float_exp(B::float_sub(logits, max));
    let probs = B::float_div(exp.clone(), B::float_sum_dim(exp, 1));
    let (values, ids) = B::float_sort_with_indices(probs, 1, true, IntDType::I32);
    let first = [Slice::full(), Slice::from(0..k)];
    let ids = B::int_into_float(B::int_slice(ids, &first), values.dtype().into());
    B::float_reshape(
        B::float_cat(vec![B::float_slice(values, &first), ids], 1),
        Shape::new([rows, 2 * k]),
    )
}

/// On the CPU the row is already in memory: a partial selection, then a sort of the `k`.
impl TopKBackend for Flex {
    fn softmax_top_k(logits: FlexTensor, k: usize) -> FlexTensor {
        let [rows, vocab] = logits.shape().dims();
        let logits = logits.to_contiguous();
        let Some(values) = logits.as_slice::<f32>() else {
            return sorted::<Self>(logits, k);
        };
        let output = softmax_top_k_host(values, vocab, k);
        FlexTensor::from_data(TensorData::new(output, [rows, 2 * k]))
    }
}

/// [`softmax_top_k`] of logits on the host, `[rows, vocab]` row by row: per row the `k` best
/// probabilities, then their ids.
pub fn softmax_top_k_host(logits: &[f32], vocab: usize, k: usize) -> Vec<f32> {
    let mut output = Vec::with_capacity(logits.len() / vocab * 2 * k);
    for row in logits.chunks_exact(vocab) {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
        let best = top_indices(row, k);
        output.extend(best.iter().map(|&i| (row[i] - max).exp() / sum));
        output.extend(best.iter().map(|&i| i as f32));
    }
    output
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_indices(row: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order.truncate(k);
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
}

impl TopKBackend for Cube {
    fn softmax_top_k(logits: FloatTensor<Self>, k: usize) -> FloatTensor<Self> {
        if k > MAX_GPU_K {
            return sorted::<Self>(logits, k);
        }
        let logits = into_contiguous(logits);
        let [rows, _] = logits.meta.shape().dims();
        let output = empty_like(&logits, [rows, 2 * k], logits.dtype);
        let subgroups = subgroups(&logits.client, KernelShape::of(&logits.client));
        kernel::top_k_kernel::launch(
            &output.client,
            CubeCount::Static(rows as u32, 1, 1),
            CubeDim::new_1d(UNITS as u32),
            logits.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            k,
            UNITS,
            subgroups,
            storage(output.dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    use crate::ops::reduce::{workgroup_max, workgroup_sum};

    #[cube(launch)]
    pub fn top_k_kernel<F: Float>(
        logits: &Tensor<F>,
        output: &mut Tensor<F>,
        k: usize,
        #[comptime] units: usize,
        #[comptime] subgroups: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let vocab = logits.shape(1);
        let unit = UNIT_POS as usize;
        let start = CUBE_POS_X as usize * vocab;
        let mut scratch = Shared::<[F]>::new_slice(units);
        let mut scratch_ids = Shared::<[u32]>::new_slice(units);

        let mut max = F::min_value();
        let mut c = unit;
        while c < vocab {
            max = F::max(max, logits[start + c]);
            c += units;
        }
        let max = workgroup_max::<F>(max, &mut scratch, units, subgroups);
        let mut sum = F::new(0.0);
        let mut c = unit;
        while c < vocab {
            sum += (logits[start + c] - max).exp();
            c += units;
        }
        let sum = workgroup_sum::<F>(sum, &mut scratch, units, subgroups);

        // Pass t finds the best token after the previous pass's (score descending, id ascending).
        let mut previous = F::max_value();
        let mut previous_id = vocab as u32;
        let out = CUBE_POS_X as usize * 2 * k;
        for t in 0..k {
            let mut best = F::min_value();
            let mut best_id = vocab as u32;
            let mut c = unit;
            while c < vocab {
                let x = logits[start + c];
                let id = c as u32;
                let after = x < previous
                    || (x == previous && (previous_id == vocab as u32 || id > previous_id));
                // Each unit walks its ids upwards, so the first of equal scores is kept.
                if after && (x > best || best_id == vocab as u32) {
                    best = x;
                    best_id = id;
                }
                c += units;
            }
            // Arg-max over the workgroup: a tree in workgroup memory.
            scratch[unit] = best;
            scratch_ids[unit] = best_id;
            sync_cube();
            #[unroll]
            for level in 1..units.trailing_zeros() as usize + 1 {
                let half = units >> level;
                if unit < half {
                    let x = scratch[unit + half];
                    let id = scratch_ids[unit + half];
                    let mine = scratch_ids[unit];
                    let better = id != vocab as u32
                        && (mine == vocab as u32
                            || x > scratch[unit]
                            || (x == scratch[unit] && id < mine));
                    if better {
                        scratch[unit] = x;
                        scratch_ids[unit] = id;
                    }
                }
                sync_cube();
            }
            previous = scratch[0];
            previous_id = scratch_ids[0];
            sync_cube();
            if unit == 0 {
                output[out + t] = (previous - max).exp() / sum;
                output[out + k + t] = F::cast_from(previous_id);
            }
        }
    }
}

/// `logits` `[rows, vocab]` → `[rows, 2k]`: the `k` best probabilities of each row, then their ids.
pub fn softmax_top_k(logits: Tensor<2>, k: usize) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::softmax_top_k(logits.into_dispatch(), k))
}
