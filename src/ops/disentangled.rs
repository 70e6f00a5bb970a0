//! DeBERTa's c2p + p2c scores from the fused projection and the layer's projection of the relative
//! position table, as one GPU kernel.
//!
//! Why: composed of burn's ops each term is a head split, a product against the whole table, a gather of
//! one column per (query, key) and copies, ~12 dispatches a layer, and the product computes every table
//! row for every query where the gather keeps `seq` of them. Here one workgroup per (item, head, query)
//! computes each key's two dot products directly. Flex and autodiff compose burn's ops.
//!
//! A relative position depends on the distance alone, so the rows come per distance (`2 × seq − 1` of
//! them, not `seq²`): what goes up to the device each call is 8 KB at 512 tokens, not 2 MB.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Int, Shape, Slice, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use cubecl::CubeDim;

use super::add_norm::row_grid;
use super::{distance_index, empty_like, storage};

/// Units per workgroup, each taking every `UNITS`-th key of the workgroup's query: a few, so that short
/// texts leave none idle (SwiftShader runs every unit, idle or not).
const UNITS: usize = 32;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait DisentangledBackend: Backend {
    /// `qkv` `[batch, seq, 3 × hidden]`; `positions` `[1, rows, 2 × hidden]`, the table's query and key
    /// projections side by side; `key_rows` `[2 × seq − 1]`, per distance `i − j` from query to key (at index
    /// `i − j + seq − 1`) the row of the key's position relative to the query; `query_rows` likewise per
    /// `j − i`, the row of the query's relative to the key → `[batch, heads, seq, seq]`: c2p
    /// `q_i · pos_k[key_rows[i − j]]` where `c2p`, plus p2c `k_j · pos_q[query_rows[j − i]]` where `p2c` (an
    /// index whose term is off is not read).
    #[allow(clippy::too_many_arguments)]
    fn disentangled_scores(
        qkv: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        key_rows: IntTensor<Self>,
        query_rows: IntTensor<Self>,
        num_heads: usize,
        c2p: bool,
        p2c: bool,
    ) -> FloatTensor<Self> {
        composed::<Self>(
            qkv,
            positions,
            [key_rows, query_rows],
            num_heads,
            [c2p, p2c],
        )
    }
}

/// The same with burn's ops: each term as a product against the whole table, then a gather.
fn composed<B: Backend>(
    qkv: FloatTensor<B>,
    positions: FloatTensor<B>,
    [key_rows, query_rows]: [IntTensor<B>; 2],
    num_heads: usize,
    [c2p, p2c]: [bool; 2],
) -> FloatTensor<B> {
    let [batch, seq, width] = qkv.shape().dims();
    let rows = positions.shape()[1];
    let hidden = width / 3;
    let head_dim = hidden / num_heads;
    // Projection `part` of `t` `[items, len, N × hidden]` split into heads, `[items, heads, len, head_dim]`.
    let heads = |t: FloatTensor<B>, part: usize| {
        let [items, len, _] = t.shape().dims();
        let columns = [
            Slice::full(),
            Slice::full(),
            Slice::from(part * hidden..(part + 1) * hidden),
        ];
        let split = B::float_reshape(
            B::float_slice(t, &columns),
            Shape::new([items, len, num_heads, head_dim]),
        );
        B::float_swap_dims(split, 1, 2)
    };
    let term = |content: FloatTensor<B>, table: FloatTensor<B>, index: IntTensor<B>| {
        let table = B::float_expand(
            B::float_swap_dims(table, 2, 3),
            Shape::new([batch, num_heads, head_dim, rows]),
        );
        let index = B::int_expand(
            grid::<B>(index, seq),
            Shape::new([batch, num_heads, seq, seq]),
        );
        B::float_gather(3, B::float_matmul(content, table), index)
    };
    let c2p = c2p.then(|| term(heads(qkv.clone(), 0), heads(positions.clone(), 1), key_rows));
    let p2c = p2c.then(|| {
        let p2c = term(heads(qkv, 1), heads(positions, 0), query_rows);
        B::float_swap_dims(p2c, 2, 3)
    });
    // The wrapper asks for at least one term.
    match (c2p, p2c) {
        (Some(c2p), Some(p2c)) => B::float_add(c2p, p2c),
        (Some(term), None) | (None, Some(term)) => term,
        (None, None) => unreachable!("disentangled_scores without a term"),
    }
}

/// `[1, 1, seq, seq]` with `by_distance[a − b + seq − 1]` at (a, b). The index is made on the host:
/// this path runs where the host is the device (Flex), or trains.
fn grid<B: Backend>(by_distance: IntTensor<B>, seq: usize) -> IntTensor<B> {
    let index: Vec<i64> = distance_index(seq).map(|i| i as i64).collect();
    let index = TensorData::new(index, [seq * seq]).convert_dtype(by_distance.dtype());
    let index = B::int_from_data(index, &by_distance.device());
    B::int_reshape(
        B::int_select(by_distance, 0, index),
        Shape::new([1, 1, seq, seq]),
    )
}

impl DisentangledBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: DisentangledBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    DisentangledBackend for burn::backend::Autodiff<B, C>
{
}

impl DisentangledBackend for Cube {
    fn disentangled_scores(
        qkv: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        key_rows: IntTensor<Self>,
        query_rows: IntTensor<Self>,
        num_heads: usize,
        c2p: bool,
        p2c: bool,
    ) -> FloatTensor<Self> {
        let [qkv, positions, key_rows, query_rows] =
            [qkv, positions, key_rows, query_rows].map(into_contiguous);
        let [batch, seq, width] = qkv.meta.shape().dims();
        let output = empty_like(&qkv, [batch, num_heads, seq, seq], qkv.dtype);
        kernel::disentangled_kernel::launch(
            &output.client,
            row_grid(batch * num_heads * seq),
            CubeDim::new_1d(UNITS as u32),
            qkv.into_tensor_arg(),
            positions.into_tensor_arg(),
            key_rows.clone().into_tensor_arg(),
            query_rows.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            width / 3 / num_heads,
            c2p,
            p2c,
            UNITS,
            [output.dtype, key_rows.dtype].map(storage),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    /// One workgroup per (item, head, query) row of the output; its units take the keys `units` apart.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn disentangled_kernel<F: Float, I: Int>(
        qkv: &Tensor<F>,
        positions: &Tensor<F>,
        key_rows: &Tensor<I>,
        query_rows: &Tensor<I>,
        output: &mut Tensor<F>,
        #[comptime] head_dim: usize,
        #[comptime] c2p: bool,
        #[comptime] p2c: bool,
        #[comptime] units: usize,
        #[define(F, I)] _dtypes: [ElemType; 2],
    ) {
        let heads = output.shape(1);
        let seq = output.shape(2);
        let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        if row >= output.shape(0) * heads * seq {
            terminate!();
        }
        let i = row % seq;
        let head = row / seq % heads;
        let b = row / seq / heads;
        let width = qkv.shape(2);
        let hidden = width / 3;
        let table_width = positions.shape(2);
        let column = head * head_dim;
        // The query, read once for all keys.
        let mut q = Array::<F>::new(head_dim);
        if c2p {
            let query = (b * seq + i) * width + column;
            #[unroll]
            for d in 0..head_dim {
                q[d] = qkv[query + d];
            }
        }
        let mut j = UNIT_POS as usize;
        while j < seq {
            let mut score = F::new(0.0);
            if c2p {
                // The query against the key's relative position (the table's key projection).
                let at = u32::cast_from(key_rows[i + seq - 1 - j]) as usize * table_width
                    + hidden
                    + column;
                #[unroll]
                for d in 0..head_dim {
                    score += q[d] * positions[at + d];
                }
            }
            if p2c {
                // The key against the query's relative position (the table's query projection).
                let key = (b * seq + j) * width + hidden + column;
                let at =
                    u32::cast_from(query_rows[j + seq - 1 - i]) as usize * table_width + column;
                #[unroll]
                for d in 0..head_dim {
                    score += qkv[key + d] * positions[at + d];
                }
            }
            output[row * seq + j] = score;
            j += units;
        }
    }
}

/// c2p + p2c `[batch, heads, seq, seq]` (not yet scaled), or `None` with neither index: `qkv` the layer's
/// fused projection, `positions` its query and key projections of the table's rows, `[1, rows, 2 × hidden]`.
pub fn disentangled_scores(
    qkv: Tensor<3>,
    positions: Tensor<3>,
    key_rows: Option<Tensor<1, Int>>,
    query_rows: Option<Tensor<1, Int>>,
    num_heads: usize,
) -> Option<Tensor<4>> {
    let (c2p, p2c) = (key_rows.is_some(), query_rows.is_some());
    // A term that is off binds the other's index in its place, unread.
    let key_rows = key_rows.or_else(|| query_rows.clone())?;
    let query_rows = query_rows.unwrap_or_else(|| key_rows.clone());
    Some(Tensor::from_dispatch(Dispatch::disentangled_scores(
        qkv.into_dispatch(),
        positions.into_dispatch(),
        key_rows.into_dispatch(),
        query_rows.into_dispatch(),
        num_heads,
        c2p,
        p2c,
    )))
}
