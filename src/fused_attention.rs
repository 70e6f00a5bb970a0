//! softmax(QKᵀ/√d_k + mask)·V for all heads as one GPU kernel, reading Q, K, V as the projections
//! wrote them (`[batch, seq, hidden]`, heads side by side) and writing the heads already concatenated.
//!
//! Why: burn's cube backend has no fused attention without autotune; its fallback (two cubecl matmuls
//! with barriers, a softmax, head split/merge copies) was the largest cost left on WebGPU after the
//! Linear kernel (1×128 on SwiftShader: 0.5 s of 1.85 s). Here each invocation owns four query rows of one
//! head and runs an online softmax over the keys (no probabilities stored, no barrier); neighbouring
//! invocations read the same K and V rows. The browser's CPU path runs
//! [`crate::cpu_kernels::self_attention`]; native flex and autodiff keep burn's `attention` op.

use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, BoolStore, DType, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_flex::FlexTensor;
use cubecl::{CubeCount, CubeDim};

use crate::cpu_kernels;

const WORKGROUP: u32 = 64;
/// Query rows per invocation: each K and V row loaded serves all of them. Attention time per 1×512 forward
/// on SwiftShader: 1 row 1550 ms, 2 1701, 4 1183, 8 876, 16 742; but the unrolled kernel's compile time
/// counts in the cold start (WebGPU, page load to first result: 4 rows 3.8 s, 8 rows 6.4 s).
const QUERY_ROWS: usize = 4;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait AttentionBackend: Backend {
    /// `query`, `key`, `value` `[batch, seq, hidden]`; `mask` `[batch, heads, seq, seq]`, true where a
    /// key is padding → context `[batch, seq, hidden]`.
    fn self_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        num_heads: usize,
    ) -> FloatTensor<Self> {
        composed::<Self>(query, key, value, mask, num_heads)
    }
}

/// The same with burn's own ops: split heads, burn's `attention`, merge heads.
fn composed<B: Backend>(
    query: FloatTensor<B>,
    key: FloatTensor<B>,
    value: FloatTensor<B>,
    mask: BoolTensor<B>,
    num_heads: usize,
) -> FloatTensor<B> {
    let [batch, seq, hidden] = query.shape().dims();
    let split = |x| {
        let x = B::float_reshape(x, Shape::new([batch, seq, num_heads, hidden / num_heads]));
        B::float_swap_dims(x, 1, 2)
    };
    let context = B::attention(
        split(query),
        split(key),
        split(value),
        Some(mask),
        None,
        AttentionModuleOptions::default(),
    );
    B::float_reshape(
        B::float_swap_dims(context, 1, 2),
        Shape::new([batch, seq, hidden]),
    )
}

/// On the CPU path in the browser, [`cpu_kernels::self_attention`]: per head two SIMD products and a
/// vectorised softmax, where burn's naive attention spent most of its time in scalar `exp`. Natively
/// flex's own attention runs on all cores and is faster (MiniLM 1×512 on 2 cores: 222 ms against 331).
impl AttentionBackend for Flex {
    fn self_attention(
        query: FlexTensor,
        key: FlexTensor,
        value: FlexTensor,
        mask: FlexTensor,
        num_heads: usize,
    ) -> FlexTensor {
        if cfg!(target_arch = "wasm32")
            && let Some(context) = flex_self_attention(&query, &key, &value, &mask, num_heads)
        {
            return context;
        }
        composed::<Self>(query, key, value, mask, num_heads)
    }
}

/// `None` unless Q, K, V are f32 (the only dtype the model computes in) and the mask is a byte per flag.
fn flex_self_attention(
    query: &FlexTensor,
    key: &FlexTensor,
    value: &FlexTensor,
    mask: &FlexTensor,
    num_heads: usize,
) -> Option<FlexTensor> {
    if [query, key, value].iter().any(|t| t.dtype() != DType::F32)
        || !matches!(mask.dtype(), DType::Bool(BoolStore::Native | BoolStore::U8))
    {
        return None;
    }
    let [batch, seq, hidden] = query.shape().dims();
    // The mask is `[batch, heads, seq, seq]` but only says which keys are padding: read row 0 of head 0.
    let (layout, flags) = (mask.layout(), mask.storage::<u8>());
    let strides = layout.strides();
    let key_padding: Vec<bool> = (0..batch * seq)
        .map(|i| {
            let at = layout.start_offset() as isize
                + (i / seq) as isize * strides[0]
                + (i % seq) as isize * strides[3];
            flags[at as usize] != 0
        })
        .collect();
    let [query, key, value] = [query, key, value].map(FlexTensor::to_contiguous);
    let context = cpu_kernels::self_attention(
        (batch, seq, hidden),
        num_heads,
        query.as_slice::<f32>()?,
        key.as_slice::<f32>()?,
        value.as_slice::<f32>()?,
        &key_padding,
    );
    Some(FlexTensor::from_data(TensorData::new(
        context,
        [batch, seq, hidden],
    )))
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: AttentionBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    AttentionBackend for burn::backend::Autodiff<B, C>
{
}

impl AttentionBackend for Cube {
    fn self_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        num_heads: usize,
    ) -> FloatTensor<Self> {
        let [query, key, value] = [query, key, value].map(into_contiguous);
        let [batch, seq, hidden] = query.meta.shape().dims();
        let (dtype, mask_dtype) = (query.dtype, mask.dtype);
        let output = empty_device_dtype(
            query.client.clone(),
            query.device.clone(),
            Shape::new([batch, seq, hidden]),
            dtype,
        );
        let invocations = (batch * num_heads * seq.div_ceil(QUERY_ROWS)) as u32;
        kernel::attention_kernel::launch(
            &output.client,
            CubeCount::Static(invocations.div_ceil(WORKGROUP), 1, 1),
            CubeDim::new_1d(WORKGROUP),
            query.into_tensor_arg(),
            key.into_tensor_arg(),
            value.into_tensor_arg(),
            mask.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            num_heads,
            hidden / num_heads,
            QUERY_ROWS,
            [dtype, mask_dtype].map(burn::backend::cubecl::dtype_to_storage_type),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub fn attention_kernel<F: Float, M: Int>(
        query: &Tensor<F>,
        key: &Tensor<F>,
        value: &Tensor<F>,
        mask: &Tensor<M>,
        output: &mut Tensor<F>,
        num_heads: usize,
        #[comptime] head_dim: usize,
        #[comptime] query_rows: usize,
        #[define(F, M)] _dtypes: [ElemType; 2],
    ) {
        let seq = output.shape(1);
        let hidden = output.shape(2);
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
        let scale = F::new(1.0) / F::cast_from(head_dim as u32).sqrt();
        let mut q = Array::<F>::new(query_rows * head_dim);
        let mut context = Array::<F>::new(query_rows * head_dim);
        #[unroll]
        for r in 0..query_rows {
            let row = (b * seq + select(i0 + r < seq, i0 + r, seq - 1)) * hidden + column;
            #[unroll]
            for d in 0..head_dim {
                q[r * head_dim + d] = query[row + d] * scale;
                context[r * head_dim + d] = F::new(0.0);
            }
        }

        // Online softmax: per query a running maximum and denominator, the context rescaled as the
        // maximum grows. A padded key's weight is exactly 0, as with Hugging Face's additive f32::MIN mask.
        let mut max = Array::<F>::new(query_rows);
        let mut sum = Array::<F>::new(query_rows);
        let mut score = Array::<F>::new(query_rows);
        let mut rescale = Array::<F>::new(query_rows);
        #[unroll]
        for r in 0..query_rows {
            max[r] = F::min_value();
            sum[r] = F::new(0.0);
        }
        let key_padding = b * mask.stride(0);
        for j in 0..seq {
            if mask[key_padding + j * mask.stride(3)] == M::new(0) {
                let key_row = (b * seq + j) * hidden + column;
                #[unroll]
                for r in 0..query_rows {
                    score[r] = F::new(0.0);
                }
                #[unroll]
                for d in 0..head_dim {
                    let k = key[key_row + d];
                    #[unroll]
                    for r in 0..query_rows {
                        score[r] += q[r * head_dim + d] * k;
                    }
                }
                #[unroll]
                for r in 0..query_rows {
                    let new_max = F::max(max[r], score[r]);
                    rescale[r] = (max[r] - new_max).exp();
                    score[r] = (score[r] - new_max).exp(); // now this key's weight
                    sum[r] = sum[r] * rescale[r] + score[r];
                    max[r] = new_max;
                }
                #[unroll]
                for d in 0..head_dim {
                    let v = value[key_row + d];
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
                let row = (b * seq + i0 + r) * hidden + column;
                #[unroll]
                for d in 0..head_dim {
                    output[row + d] = context[r * head_dim + d] / sum[r];
                }
            }
        }
    }
}

/// `query`, `key`, `value` `[batch, seq, hidden]` → context `[batch, seq, hidden]`, heads concatenated.
pub fn self_attention(
    query: Tensor<3>,
    key: Tensor<3>,
    value: Tensor<3>,
    mask: Tensor<4, Bool>,
    num_heads: usize,
) -> Tensor<3> {
    Tensor::from_dispatch(Dispatch::self_attention(
        query.into_dispatch(),
        key.into_dispatch(),
        value.into_dispatch(),
        mask.into_dispatch(),
        num_heads,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The browser's CPU attention through its flex glue (the mask read through its strides), against
    /// burn's `attention` on the same tensors.
    #[test]
    fn flex_self_attention_matches_burn_ops() {
        let (batch, seq, hidden, heads) = (2, 9, 16, 4);
        let tensor = |seed: f32| {
            let values = (0..batch * seq * hidden)
                .map(|i| (i as f32 * 0.61 + seed).sin())
                .collect();
            FlexTensor::from_data(TensorData::new::<f32, _>(values, [batch, seq, hidden]))
        };
        let (query, key, value) = (tensor(1.0), tensor(2.0), tensor(3.0));
        // The second item's last three keys are padding.
        let flags = (0..batch * heads * seq * seq)
            .map(|i| i / (heads * seq * seq) == 1 && i % seq >= seq - 3);
        let mask = FlexTensor::from_data(TensorData::new(
            flags.collect::<Vec<bool>>(),
            [batch, heads, seq, seq],
        ));
        let got = flex_self_attention(&query, &key, &value, &mask, heads).expect("f32 inputs");
        let want = composed::<Flex>(query, key, value, mask, heads);
        let diff = crate::cpu_kernels::max_abs_diff(got, want);
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
