//! The `Serial` shape, for CPU-backed adapters: each invocation owns a few query rows of one head and
//! runs an online softmax over all the keys they reach, with no workgroup memory and no barrier.

use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use super::Arguments;
use crate::ops::{empty_like, storage};

const WORKGROUP: u32 = 64;
/// Query rows per invocation (`Serial`): each K and V row loaded serves all of them. Attention time per
/// 1×512 forward on SwiftShader: 1 row 1550 ms, 2 1701, 4 1183, 8 876, 16 742; but the unrolled kernel's
/// compile time counts in the cold start (WebGPU, page load to first result: 4 rows 3.8 s, 8 rows 6.4 s).
const QUERY_ROWS: usize = 4;

pub(super) fn serial(
    qkv: CubeTensor,
    attention_mask: CubeTensor,
    bias: CubeTensor,
    args: Arguments,
) -> CubeTensor {
    let [batch, seq, width] = qkv.meta.shape().dims();
    let hidden = width / 3;
    let output = empty_like(&qkv, [batch, seq, hidden], qkv.dtype);
    let invocations = (batch * args.num_heads * seq.div_ceil(QUERY_ROWS)) as u32;
    kernel::attention_kernel::launch(
        &output.client,
        CubeCount::Static(invocations.div_ceil(WORKGROUP), 1, 1),
        CubeDim::new_1d(WORKGROUP),
        qkv.into_tensor_arg(),
        attention_mask.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        args.num_heads,
        args.scale,
        args.bias_scale,
        args.window.min(seq),
        args.has_bias,
        hidden / args.num_heads,
        QUERY_ROWS,
        storage(output.dtype),
    );
    output
}

mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn attention_kernel<F: Float>(
        qkv: &Tensor<F>,
        attention_mask: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        num_heads: usize,
        scale: f32,
        bias_scale: f32,
        window: usize,
        #[comptime] has_bias: bool,
        #[comptime] head_dim: usize,
        #[comptime] query_rows: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = output.shape(1);
        let hidden = output.shape(2);
        let width = qkv.shape(2);
        let query_tiles = seq.div_ceil(query_rows);
        let pos = ABSOLUTE_POS;
        if pos >= output.shape(0) * num_heads * query_tiles {
            terminate!();
        }
        // Invocations of one (batch, head) are adjacent, so they share K and V rows in cache.
        let i0 = pos % query_tiles * query_rows;
        let head = pos / query_tiles % num_heads;
        let b = pos / query_tiles / num_heads;
        let column = head * head_dim;

        // Rows past the end (last tile) repeat the last query and are not written.
        let scale = F::cast_from(scale);
        let bias_scale = F::cast_from(bias_scale);
        // This head's bias rows, of this item or of the one item that all share.
        let bias_head = ((b % bias.shape(0)) * num_heads + head) * seq * seq;
        let mut q = Array::<F>::new(query_rows * head_dim);
        let mut context = Array::<F>::new(query_rows * head_dim);
        #[unroll]
        for r in 0..query_rows {
            let row = (b * seq + select(i0 + r < seq, i0 + r, seq - 1)) * width + column;
            #[unroll]
            for d in 0..head_dim {
                q[r * head_dim + d] = qkv[row + d] * scale;
                context[r * head_dim + d] = F::new(0.0);
            }
        }

        // Online softmax: per query a running maximum and denominator, the context rescaled as the
        // maximum grows. A padded key's weight is exactly 0, as with Hugging Face's additive f32::MIN mask,
        // and so is that of a key out of a query's window.
        let mut row_max = Array::<F>::new(query_rows);
        let mut sum = Array::<F>::new(query_rows);
        let mut score = Array::<F>::new(query_rows);
        let mut rescale = Array::<F>::new(query_rows);
        #[unroll]
        for r in 0..query_rows {
            row_max[r] = F::min_value();
            sum[r] = F::new(0.0);
        }
        // Only the keys that some of these queries reach.
        let first = max(i0, window) - window;
        let last = min(seq, i0 + query_rows + window);
        for j in first..last {
            if attention_mask[b * seq + j] != F::new(0.0) {
                let key_row = (b * seq + j) * width + hidden + column;
                let value_row = key_row + hidden;
                #[unroll]
                for r in 0..query_rows {
                    score[r] = F::new(0.0);
                }
                #[unroll]
                for d in 0..head_dim {
                    let k = qkv[key_row + d];
                    #[unroll]
                    for r in 0..query_rows {
                        score[r] += q[r * head_dim + d] * k;
                    }
                }
                #[unroll]
                for r in 0..query_rows {
                    let i = min(i0 + r, seq - 1);
                    let reach = max(i, j) - min(i, j) <= window;
                    let mut s = score[r];
                    if has_bias {
                        s += bias[bias_head + i * seq + j] * bias_scale;
                    }
                    let new_max = select(reach, F::max(row_max[r], s), row_max[r]);
                    rescale[r] = (row_max[r] - new_max).exp();
                    // Now this key's weight.
                    score[r] = select(reach, (s - new_max).exp(), F::new(0.0));
                    sum[r] = sum[r] * rescale[r] + score[r];
                    row_max[r] = new_max;
                }
                #[unroll]
                for d in 0..head_dim {
                    let v = qkv[value_row + d];
                    #[unroll]
                    for r in 0..query_rows {
                        let c = r * head_dim + d;
                        context[c] = context[c] * rescale[r] + score[r] * v;
                    }
                }
            }
        }
        #[unroll]
        for r in 0..query_rows {
            if i0 + r < seq {
                // A query that reaches no token (padding beyond a window) gets zeros, as in burn.
                let reached = sum[r] > F::new(0.0);
                let row = (b * seq + i0 + r) * hidden + column;
                #[unroll]
                for d in 0..head_dim {
                    let c = context[r * head_dim + d];
                    output[row + d] = select(reached, c / sum[r], F::new(0.0));
                }
            }
        }
    }
}
