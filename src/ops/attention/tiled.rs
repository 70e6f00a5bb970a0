//! The `Tiled` shape, for real GPUs: one workgroup per (item, head, block of queries), blocks of K and
//! V staged in workgroup memory, each query's online softmax split over groups of units and merged.

use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use super::Arguments;
use super::serial::serial;
use crate::ops::{empty_like, storage, workgroup_bytes};

/// `Tiled`: queries per workgroup, and the units that share each query's keys.
const QUERY_BLOCK: usize = 32;
const KEY_GROUPS: usize = 4;
/// `Tiled`: keys staged in workgroup memory per step.
const KEY_BLOCK: usize = 64;

pub(super) fn tiled(
    qkv: CubeTensor,
    attention_mask: CubeTensor,
    bias: CubeTensor,
    args: Arguments,
) -> CubeTensor {
    let [batch, seq, width] = qkv.meta.shape().dims();
    let hidden = width / 3;
    let head_dim = hidden / args.num_heads;
    let limit = qkv.client.properties().hardware.max_shared_memory_size;
    let element = qkv.dtype.size();
    let Some((query_block, key_block)) = tiled_blocks(head_dim, args.has_bias, element, limit)
    else {
        return serial(qkv, attention_mask, bias, args);
    };
    let output = empty_like(&qkv, [batch, seq, hidden], qkv.dtype);
    kernel::tiled_attention_kernel::launch(
        &output.client,
        CubeCount::Static(
            seq.div_ceil(query_block) as u32,
            args.num_heads as u32,
            batch as u32,
        ),
        CubeDim::new_1d((query_block * KEY_GROUPS) as u32),
        qkv.into_tensor_arg(),
        attention_mask.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        args.scale,
        args.bias_scale,
        args.window.min(seq),
        args.has_bias,
        head_dim,
        query_block,
        key_block,
        KEY_GROUPS,
        storage(output.dtype),
    );
    output
}

/// `Tiled`: the most queries, then keys, per block whose workgroup memory ([`tiled_shared`]) fits the
/// device's `limit`.
/// Browsers and lavapipe allow 32 KiB, where a 64-wide head's 32 queries would need 34 to merge.
fn tiled_blocks(
    head_dim: usize,
    has_bias: bool,
    element: usize,
    limit: usize,
) -> Option<(usize, usize)> {
    let needs = |query_block: usize, key_block: usize| {
        let [words, keep, bias] =
            tiled_shared(query_block, key_block, KEY_GROUPS, head_dim / 4, has_bias);
        workgroup_bytes(element, &[4 * words, keep, bias])
    };
    [QUERY_BLOCK, QUERY_BLOCK / 2, QUERY_BLOCK / 4]
        .into_iter()
        .flat_map(|query_block| [KEY_BLOCK, KEY_BLOCK / 2, KEY_BLOCK / 4].map(|k| (query_block, k)))
        // Each key of a block has a unit to stage its mask.
        .filter(|&(query_block, key_block)| key_block <= query_block * KEY_GROUPS)
        .find(|&(query_block, key_block)| needs(query_block, key_block) <= limit)
}

/// The tiled kernel's workgroup variables, in elements, as it declares them: words of 4 used twice (the K
/// and V rows of a block of keys while the keys are walked, then each group's softmax state
/// `[max, sum, _, _]` and context for the merge), the staged keys' mask, and the block's bias (one
/// element where there is none).
fn tiled_shared(
    query_block: usize,
    key_block: usize,
    key_groups: usize,
    lanes: usize,
    has_bias: bool,
) -> [usize; 3] {
    let staged = 2 * key_block * lanes;
    let merged = query_block * key_groups * (lanes + 1);
    let bias = if has_bias { query_block * key_block } else { 1 };
    [staged.max(merged), key_block, bias]
}

mod kernel {
    use cubecl::prelude::*;

    /// Four consecutive words, the unit of workgroup memory here: in Chrome every workgroup-memory
    /// access is bounds-clamped, and a clamp per word cost the kernel ~3× its time (H100, 1×512).
    type Word4<F> = Vector<F, Const<4>>;

    #[cube]
    fn read4<F: Float>(tensor: &Tensor<F>, at: usize) -> Word4<F> {
        let mut v = Word4::<F>::empty();
        #[unroll]
        for c in 0..4 {
            v.insert(c, tensor[at + c]);
        }
        v
    }

    #[cube]
    fn sum4<F: Float>(v: Word4<F>) -> F {
        v.extract(0usize) + v.extract(1usize) + v.extract(2usize) + v.extract(3usize)
    }

    /// Whether key `key` (`keep`: 1 for a token, 0 for padding or past the end) counts for query `query`.
    #[cube]
    fn weighs<F: Float>(keep: F, query: usize, key: usize, window: usize) -> bool {
        // `select`, not `&&`: a branch per key here leaves SwiftShader compiling for minutes.
        select(
            max(query, key) - min(query, key) <= window,
            keep,
            F::new(0.0),
        ) != F::new(0.0)
    }

    /// One workgroup: item `CUBE_POS_Z`, head `CUBE_POS_Y`, queries `CUBE_POS_X × query_block ..`.
    /// Unit `u` owns query `u % query_block` and, of each staged block of keys, those congruent to
    /// `u / query_block` modulo `key_groups`; at the end the groups' softmax states are merged.
    /// `head_dim` is a multiple of 4.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn tiled_attention_kernel<F: Float>(
        qkv: &Tensor<F>,
        attention_mask: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        scale: f32,
        bias_scale: f32,
        window: usize,
        #[comptime] has_bias: bool,
        #[comptime] head_dim: usize,
        #[comptime] query_block: usize,
        #[comptime] key_block: usize,
        #[comptime] key_groups: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = output.shape(1);
        let hidden = output.shape(2);
        let width = qkv.shape(2);
        let units = query_block * key_groups;
        let keys_per_unit = key_block / key_groups;
        let lanes = comptime!(head_dim / 4); // words of 4 per head row
        let unit = UNIT_POS as usize;
        let qi = unit % query_block;
        let group = unit / query_block;
        let b = CUBE_POS_Z as usize;
        let head = CUBE_POS_Y as usize;
        let column = head * head_dim;
        let i0 = CUBE_POS_X as usize * query_block;
        let i = i0 + qi;
        // This head's bias rows, of this item or of the one item that all share.
        let bias_head = ((b % bias.shape(0)) * CUBE_COUNT_Y as usize + head) * seq * seq;
        let bias_scale = F::cast_from(bias_scale);
        // Only the keys that some of the block's queries reach.
        let mut j0 = max(i0, window) - window;
        let last = min(seq, i0 + query_block + window);

        // Workgroup memory, as `tiled_blocks` fitted it to the device.
        let sizes = comptime!(crate::ops::attention::tiled::tiled_shared(
            query_block,
            key_block,
            key_groups,
            lanes,
            has_bias
        ));
        let mut shared = Shared::<[Word4<F>]>::new_slice(comptime!(sizes[0]));
        let mut keep = Shared::<[F]>::new_slice(comptime!(sizes[1]));
        // The bias of the block's queries and staged keys, scaled.
        let mut block_bias = Shared::<[F]>::new_slice(comptime!(sizes[2]));

        // A query past the end computes on the last row and is not written.
        let row = (b * seq + min(i, seq - 1)) * width + column;
        let scale = Word4::<F>::new(F::cast_from(scale));
        let mut q = Array::<Word4<F>>::new(lanes);
        let mut context = Array::<Word4<F>>::new(lanes);
        #[unroll]
        for l in 0..lanes {
            q[l] = read4(qkv, row + 4 * l) * scale;
            context[l] = Word4::<F>::new(F::new(0.0));
        }
        let mut max = F::min_value();
        let mut sum = F::new(0.0);
        let mut score = Array::<F>::new(keys_per_unit);

        while j0 < last {
            // Stage K and V rows j0.. (each a contiguous run of head_dim words) and their mask.
            #[unroll]
            for s in 0..(2 * key_block * lanes).div_ceil(units) {
                let e = unit + s * units;
                if e < 2 * key_block * lanes {
                    let part = e / (key_block * lanes); // 0: K, 1: V
                    let j = e % (key_block * lanes) / lanes;
                    let key = min(j0 + j, seq - 1);
                    shared[e] = read4(
                        qkv,
                        (b * seq + key) * width + (part + 1) * hidden + column + 4 * (e % lanes),
                    );
                }
            }
            if unit < key_block {
                let key = j0 + unit;
                let token = attention_mask[b * seq + min(key, seq - 1)];
                keep[unit] = select(key < seq, token, F::new(0.0));
            }
            if has_bias {
                #[unroll]
                for s in 0..(query_block * key_block).div_ceil(units) {
                    let e = unit + s * units;
                    if e < query_block * key_block {
                        let query = min(i0 + e / key_block, seq - 1);
                        let key = min(j0 + e % key_block, seq - 1);
                        block_bias[e] = bias[bias_head + query * seq + key] * bias_scale;
                    }
                }
            }
            sync_cube();

            // Scores of this unit's keys, then one rescale of the context for the block.
            let mut block_max = F::min_value();
            #[unroll]
            for t in 0..keys_per_unit {
                let j = group + t * key_groups;
                let mut s = Word4::<F>::new(F::new(0.0));
                #[unroll]
                for l in 0..lanes {
                    s += q[l] * shared[j * lanes + l];
                }
                let mut s = sum4(s);
                if has_bias {
                    s += block_bias[qi * key_block + j];
                }
                score[t] = select(weighs::<F>(keep[j], i, j0 + j, window), s, F::min_value());
                block_max = F::max(block_max, score[t]);
            }
            let new_max = F::max(max, block_max);
            let rescale = (max - new_max).exp();
            sum *= rescale;
            #[unroll]
            for l in 0..lanes {
                context[l] *= Word4::<F>::new(rescale);
            }
            #[unroll]
            for t in 0..keys_per_unit {
                let j = group + t * key_groups;
                // A padded key weighs exactly 0, as with Hugging Face's additive f32::MIN mask, and so
                // does a key out of the query's window.
                let p = select(
                    weighs::<F>(keep[j], i, j0 + j, window),
                    (score[t] - new_max).exp(),
                    F::new(0.0),
                );
                sum += p;
                let weight = Word4::<F>::new(p);
                #[unroll]
                for l in 0..lanes {
                    context[l] += weight * shared[(key_block + j) * lanes + l];
                }
            }
            max = new_max;
            sync_cube();
            j0 += key_block;
        }

        // Merge the groups' states of each query; group 0 writes.
        let state = unit * (lanes + 1);
        let mut head = Word4::<F>::new(F::new(0.0));
        head.insert(0usize, max);
        head.insert(1usize, sum);
        shared[state] = head;
        #[unroll]
        for l in 0..lanes {
            shared[state + 1 + l] = context[l];
        }
        sync_cube();
        if group == 0 && i < seq {
            let mut total_max = F::min_value();
            #[unroll]
            for g in 0..key_groups {
                total_max = F::max(
                    total_max,
                    shared[(g * query_block + qi) * (lanes + 1)].extract(0usize),
                );
            }
            let mut total = F::new(0.0);
            #[unroll]
            for l in 0..lanes {
                context[l] = Word4::<F>::new(F::new(0.0));
            }
            #[unroll]
            for g in 0..key_groups {
                let at = (g * query_block + qi) * (lanes + 1);
                let state = shared[at];
                let weight = (state.extract(0usize) - total_max).exp();
                total += state.extract(1usize) * weight;
                let weight = Word4::<F>::new(weight);
                #[unroll]
                for l in 0..lanes {
                    context[l] += shared[at + 1 + l] * weight;
                }
            }
            // A query that reaches no token (padding beyond a window) gets zeros, as in burn.
            let reached = total > F::new(0.0);
            let out = (b * seq + i) * hidden + column;
            #[unroll]
            for l in 0..lanes {
                #[unroll]
                for c in 0..4 {
                    output[out + 4 * l + c] =
                        select(reached, context[l].extract(c) / total, F::new(0.0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::MAX_HEAD_DIM;

    /// Within the 32 KiB of workgroup memory that browsers and lavapipe allow, every head width the tiled
    /// kernel takes finds blocks: MiniLM's as measured on the H100, a 64-wide head at half the queries and
    /// keys (all of them with NVIDIA's 48 KiB), a 128-wide at a quarter.
    #[test]
    fn tiled_blocks_fit_the_workgroup_memory() {
        for head_dim in (4..=MAX_HEAD_DIM).step_by(4) {
            for has_bias in [false, true] {
                assert!(
                    tiled_blocks(head_dim, has_bias, 4, 32 << 10).is_some(),
                    "{head_dim}"
                );
            }
        }
        assert_eq!(tiled_blocks(32, true, 4, 32 << 10), Some((32, 64)));
        assert_eq!(tiled_blocks(64, true, 4, 32 << 10), Some((16, 32)));
        assert_eq!(tiled_blocks(64, true, 4, 48 << 10), Some((32, 64)));
        assert_eq!(tiled_blocks(128, false, 4, 32 << 10), Some((8, 16)));
        assert_eq!(tiled_blocks(128, false, 4, 16 << 10), None);
    }
}
