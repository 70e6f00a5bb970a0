//! Rotary position embeddings turning Q and K where the fused projection wrote them
//! (`[batch, seq, 3 × hidden]`), as one GPU kernel.
//!
//! Why: composed of burn's ops (narrow Q and K, the negated half, concatenations, two products and a
//! sum, then Q, K and V put back together) this was ~30 dispatches of a ModernBERT layer's ~45. Here one
//! workgroup per token turns each pair of dimensions (`d`, `d + head_dim / 2`) of every head of Q and K
//! and copies V. Flex and autodiff compose burn's ops.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Slice, Tensor};
use burn_cubecl::kernel::into_contiguous;
use cubecl::CubeDim;

use super::add_norm::{ROW_UNITS, row_grid};
use super::{empty_like, storage};

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait RotaryBackend: Backend {
    /// `qkv` `[batch, seq, 3 × hidden]`, `cos` and `sin` `[seq, head_dim]` → `qkv` with every head of Q
    /// and K turned: `x·cos + rotate_half(x)·sin`, `rotate_half` putting the negated second half of a head
    /// before its first (transformers' `apply_rotary_pos_emb`); V as it was.
    fn rotate_queries_keys(
        qkv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        num_heads: usize,
    ) -> FloatTensor<Self> {
        composed::<Self>(qkv, cos, sin, num_heads)
    }
}

/// The same with burn's ops.
fn composed<B: Backend>(
    qkv: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    num_heads: usize,
) -> FloatTensor<B> {
    let [batch, seq, width] = qkv.shape().dims();
    let hidden = width / 3;
    let head_dim = hidden / num_heads;
    let half = head_dim / 2;
    let columns =
        |range: std::ops::Range<usize>| [Slice::full(), Slice::full(), Slice::from(range)];
    // Q's heads and K's heads, [batch, seq, 2 × heads, head_dim].
    let x = B::float_reshape(
        B::float_slice(qkv.clone(), &columns(0..2 * hidden)),
        Shape::new([batch, seq, 2 * num_heads, head_dim]),
    );
    let halves = |range: std::ops::Range<usize>| {
        let dims = [
            Slice::full(),
            Slice::full(),
            Slice::full(),
            Slice::from(range),
        ];
        B::float_slice(x.clone(), &dims)
    };
    let rotated = B::float_cat(
        vec![B::float_neg(halves(half..head_dim)), halves(0..half)],
        3,
    );
    let table = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([1, seq, 1, head_dim]));
    let turned = B::float_add(
        B::float_mul(x, table(cos)),
        B::float_mul(rotated, table(sin)),
    );
    B::float_cat(
        vec![
            B::float_reshape(turned, Shape::new([batch, seq, 2 * hidden])),
            B::float_slice(qkv, &columns(2 * hidden..width)),
        ],
        2,
    )
}

impl RotaryBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: RotaryBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    RotaryBackend for burn::backend::Autodiff<B, C>
{
}

impl RotaryBackend for Cube {
    fn rotate_queries_keys(
        qkv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        num_heads: usize,
    ) -> FloatTensor<Self> {
        let [qkv, cos, sin] = [qkv, cos, sin].map(into_contiguous);
        let [batch, seq, width] = qkv.meta.shape().dims();
        let output = empty_like(&qkv, [batch, seq, width], qkv.dtype);
        kernel::rotary_kernel::launch(
            &output.client,
            row_grid(batch * seq),
            CubeDim::new_1d(ROW_UNITS as u32),
            qkv.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            width / 3 / num_heads,
            ROW_UNITS,
            storage(output.dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    /// One workgroup per token; its units take the token's dimension pairs of Q and K, then its V
    /// columns, `units` apart, so that neighbouring units read neighbouring words.
    #[cube(launch)]
    pub fn rotary_kernel<F: Float>(
        qkv: &Tensor<F>,
        cos: &Tensor<F>,
        sin: &Tensor<F>,
        output: &mut Tensor<F>,
        #[comptime] head_dim: usize,
        #[comptime] units: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = qkv.shape(1);
        let width = qkv.shape(2);
        let hidden = width / 3;
        let half = comptime!(head_dim / 2);
        let token = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        if token >= qkv.shape(0) * seq {
            terminate!();
        }
        let row = token * width;
        let angles = token % seq * head_dim;
        // Q's heads then K's, each head's first half paired with its second: `hidden` pairs.
        let mut p = UNIT_POS as usize;
        while p < hidden {
            let d = p % half;
            let first = row + p / half * head_dim + d;
            let (x1, x2) = (qkv[first], qkv[first + half]);
            // Both halves of a head turn by the same angles.
            let (c, s) = (cos[angles + d], sin[angles + d]);
            output[first] = x1 * c - x2 * s;
            output[first + half] = x2 * c + x1 * s;
            p += units;
        }
        let mut v = UNIT_POS as usize;
        while v < hidden {
            output[row + 2 * hidden + v] = qkv[row + 2 * hidden + v];
            v += units;
        }
    }
}

/// `qkv` `[batch, seq, 3 × hidden]` with Q and K turned by the angles of their positions; `cos` and
/// `sin` `[seq, head_dim]`.
pub fn rotate_queries_keys(
    qkv: Tensor<3>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    num_heads: usize,
) -> Tensor<3> {
    Tensor::from_dispatch(Dispatch::rotate_queries_keys(
        qkv.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        num_heads,
    ))
}
