//! The input representation in one GPU kernel: look up each token's word, segment and position
//! embeddings, add them, LayerNorm.
//!
//! Why: composed of burn's ops this is three gathers, two adds and the norm (six dispatches per forward,
//! each a round of launch overhead on a real GPU). Here one workgroup per token does it all, with the
//! row reductions of [`super::add_norm`], and reads an f16 word table as it is stored (two halves a
//! word, as the Linear kernels read f16 weights), so an fp16 model's table is never widened on the GPU.
//! Flex and autodiff compose burn's ops.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Int, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use cubecl::CubeDim;

use super::add_norm::{ROW_UNITS, row_grid};
use super::linear::Weight;
use super::linear::weight::Stored;
use super::{KernelShape, empty_like, optional, or_absent, present, storage, subgroups};

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait EmbeddingsBackend: Backend {
    /// `input_ids`, `token_type_ids` `[rows]` (rows = batch × seq, positions counting from 0 in each
    /// sequence of `seq`); tables `[n, hidden]`; `gamma`, `beta` `[hidden]` → `[rows, hidden]`:
    /// `LayerNorm(word[id] + token_type[type] + position[row % seq])`. A family without segments has no
    /// `token_type` table, one whose attention holds the positions has no `position` table, and a
    /// LayerNorm may have no `beta`: what is empty ([`super::or_absent`]) is left out.
    #[allow(clippy::too_many_arguments)]
    fn embed_norm(
        input_ids: IntTensor<Self>,
        token_type_ids: IntTensor<Self>,
        seq: usize,
        word: FloatTensor<Self>,
        position: FloatTensor<Self>,
        token_type: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let rows = input_ids.shape()[0];
        let device = input_ids.device();
        let int_dtype = input_ids.dtype().into();
        let mut sum = Self::float_select(word, 0, input_ids);
        if let Some(token_type) = present(token_type) {
            let types = Self::float_select(token_type, 0, token_type_ids);
            sum = Self::float_add(sum, types);
        }
        if let Some(position) = present(position) {
            let positions = Self::int_reshape(
                Self::int_expand(
                    Self::int_arange(0..seq as i64, &device, int_dtype),
                    Shape::new([rows / seq, seq]),
                ),
                Shape::new([rows]),
            );
            sum = Self::float_add(sum, Self::float_select(position, 0, positions));
        }
        Self::layer_norm(sum, gamma, present(beta), epsilon)
    }
}

impl EmbeddingsBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: EmbeddingsBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    EmbeddingsBackend for burn::backend::Autodiff<B, C>
{
}

impl EmbeddingsBackend for Cube {
    fn embed_norm(
        input_ids: IntTensor<Self>,
        token_type_ids: IntTensor<Self>,
        seq: usize,
        word: FloatTensor<Self>,
        position: FloatTensor<Self>,
        token_type: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (position, token_type, beta) = (present(position), present(token_type), present(beta));
        let [input_ids, token_type_ids, gamma] =
            [input_ids, token_type_ids, gamma].map(into_contiguous);
        let rows = input_ids.meta.shape()[0];
        let hidden = word.meta.shape()[1];
        let output = empty_like(&gamma, [rows, hidden], gamma.dtype);
        let (word, values, _, stored) = Weight::table(word).bindings(&output);
        let (position, has_position) = optional(position, &output);
        let (token_type, has_token_type) = optional(token_type, &output);
        let (beta, has_beta) = optional(beta, &output);
        let shape = KernelShape::of(&output.client);
        kernel::embed_norm_kernel::launch(
            &output.client,
            row_grid(rows),
            CubeDim::new_1d(ROW_UNITS as u32),
            input_ids.clone().into_tensor_arg(),
            token_type_ids.into_tensor_arg(),
            word.into_tensor_arg(),
            values.into_tensor_arg(),
            position.into_tensor_arg(),
            token_type.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            seq,
            epsilon as f32,
            stored == Stored::F16,
            has_position,
            has_token_type,
            has_beta,
            hidden.div_ceil(ROW_UNITS),
            subgroups(&output.client, shape),
            [output.dtype, input_ids.dtype].map(storage),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    use crate::ops::add_norm::kernel::store_row_norm;
    use crate::ops::linear::weight::unpack::f16_weight;

    /// One workgroup per token. The word table is read from `word` (f32 rows), or where `word_f16`
    /// from `word_values` (`[n, hidden / 2]` words of two halves).
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn embed_norm_kernel<F: Float, I: Int>(
        input_ids: &Tensor<I>,
        token_type_ids: &Tensor<I>,
        word: &Tensor<F>,
        word_values: &Tensor<u32>,
        position: &Tensor<F>,
        token_type: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        seq: usize,
        epsilon: f32,
        #[comptime] word_f16: bool,
        #[comptime] has_position: bool,
        #[comptime] has_token_type: bool,
        #[comptime] has_beta: bool,
        #[comptime] per_unit: usize,
        #[comptime] subgroups: bool,
        #[define(F, I)] _dtypes: [ElemType; 2],
    ) {
        let units = comptime!(crate::ops::add_norm::ROW_UNITS);
        let hidden = output.shape(1);
        let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        // Uniform across the workgroup, so no unit misses a barrier.
        if row >= output.shape(0) {
            terminate!();
        }
        let id = u32::cast_from(input_ids[row]) as usize;
        let type_row = u32::cast_from(token_type_ids[row]) as usize * hidden;
        let position_row = row % seq * hidden;
        let mut x = Array::<F>::new(per_unit);
        #[unroll]
        for i in 0..per_unit {
            let k = UNIT_POS as usize + i * units;
            let c = min(k, hidden - 1);
            // Hugging Face's order: (word + token type) + position.
            let mut value = if word_f16 {
                f16_weight::<F>(word_values, id, c)
            } else {
                word[id * hidden + c]
            };
            if has_token_type {
                value += token_type[type_row + c];
            }
            if has_position {
                value += position[position_row + c];
            }
            x[i] = select(k < hidden, value, F::new(0.0));
        }
        store_row_norm(
            &mut x,
            output,
            gamma,
            beta,
            row * hidden,
            epsilon,
            has_beta,
            units,
            per_unit,
            subgroups,
        );
    }
}

/// `input_ids`, `token_type_ids` `[batch, seq]` → `LayerNorm(word + token type + position)`
/// `[batch, seq, hidden]`, without the tables a family lacks.
#[allow(clippy::too_many_arguments)]
pub fn embed_norm(
    input_ids: Tensor<2, Int>,
    token_type_ids: Tensor<2, Int>,
    word: Tensor<2>,
    position: Option<Tensor<2>>,
    token_type: Option<Tensor<2>>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<3> {
    let [batch, seq] = input_ids.dims();
    let hidden = word.dims()[1];
    let device = word.device();
    let rows = |ids: Tensor<2, Int>| ids.reshape([batch * seq]).into_dispatch();
    let output = Dispatch::embed_norm(
        rows(input_ids),
        rows(token_type_ids),
        seq,
        word.into_dispatch(),
        or_absent(position, &device).into_dispatch(),
        or_absent(token_type, &device).into_dispatch(),
        gamma.into_dispatch(),
        or_absent(beta, &device).into_dispatch(),
        epsilon,
    );
    Tensor::<2>::from_dispatch(output).reshape([batch, seq, hidden])
}
