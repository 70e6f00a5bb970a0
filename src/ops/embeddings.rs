//! The input representation in one GPU kernel: look up each token's word, segment and position
//! embeddings, add them, LayerNorm.
//!
//! Why: composed of burn's ops this is three gathers, two adds and the norm (six dispatches per forward,
//! each a round of launch overhead on a real GPU). Here one workgroup per token does it all, with the
//! row reductions of [`super::add_norm`]. Flex and autodiff compose burn's ops.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Int, Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use cubecl::CubeDim;

use super::add_norm::{ROW_UNITS, row_grid};
use super::{KernelShape, empty_like, storage, subgroups};

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait EmbeddingsBackend: Backend {
    /// `input_ids`, `token_type_ids` `[rows]` (rows = batch × seq, positions counting from 0 in each
    /// sequence of `seq`); tables `[n, hidden]`; `gamma`, `beta` `[hidden]` → `[rows, hidden]`:
    /// `LayerNorm(word[id] + token_type[type] + position[row % seq])`.
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
        let positions = Self::int_reshape(
            Self::int_expand(
                Self::int_arange(0..seq as i64, &device, int_dtype),
                Shape::new([rows / seq, seq]),
            ),
            Shape::new([rows]),
        );
        let tokens = Self::float_add(
            Self::float_select(word, 0, input_ids),
            Self::float_select(token_type, 0, token_type_ids),
        );
        let sum = Self::float_add(tokens, Self::float_select(position, 0, positions));
        Self::layer_norm(sum, gamma, Some(beta), epsilon)
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
        let [
            input_ids,
            token_type_ids,
            word,
            position,
            token_type,
            gamma,
            beta,
        ] = [
            input_ids,
            token_type_ids,
            word,
            position,
            token_type,
            gamma,
            beta,
        ]
        .map(into_contiguous);
        let rows = input_ids.meta.shape()[0];
        let hidden = word.meta.shape()[1];
        let output = empty_like(&word, [rows, hidden], word.dtype);
        let shape = KernelShape::of(&word.client);
        kernel::embed_norm_kernel::launch(
            &output.client,
            row_grid(rows),
            CubeDim::new_1d(ROW_UNITS as u32),
            input_ids.clone().into_tensor_arg(),
            token_type_ids.into_tensor_arg(),
            word.into_tensor_arg(),
            position.into_tensor_arg(),
            token_type.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            seq,
            epsilon as f32,
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

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn embed_norm_kernel<F: Float, I: Int>(
        input_ids: &Tensor<I>,
        token_type_ids: &Tensor<I>,
        word: &Tensor<F>,
        position: &Tensor<F>,
        token_type: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        seq: usize,
        epsilon: f32,
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
        let word_row = u32::cast_from(input_ids[row]) as usize * hidden;
        let type_row = u32::cast_from(token_type_ids[row]) as usize * hidden;
        let position_row = row % seq * hidden;
        let mut x = Array::<F>::new(per_unit);
        #[unroll]
        for i in 0..per_unit {
            let k = UNIT_POS as usize + i * units;
            let c = min(k, hidden - 1);
            // Hugging Face's order: (word + token type) + position.
            let value = word[word_row + c] + token_type[type_row + c] + position[position_row + c];
            x[i] = select(k < hidden, value, F::new(0.0));
        }
        store_row_norm(
            &mut x,
            output,
            gamma,
            beta,
            row * hidden,
            epsilon,
            units,
            per_unit,
            subgroups,
        );
    }
}

/// `input_ids`, `token_type_ids` `[batch, seq]` → `LayerNorm(word + token type + position)`
/// `[batch, seq, hidden]`.
#[allow(clippy::too_many_arguments)]
pub fn embed_norm(
    input_ids: Tensor<2, Int>,
    token_type_ids: Tensor<2, Int>,
    word: Tensor<2>,
    position: Tensor<2>,
    token_type: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<3> {
    let [batch, seq] = input_ids.dims();
    let hidden = word.dims()[1];
    let rows = |ids: Tensor<2, Int>| ids.reshape([batch * seq]).into_dispatch();
    let output = Dispatch::embed_norm(
        rows(input_ids),
        rows(token_type_ids),
        seq,
        word.into_dispatch(),
        position.into_dispatch(),
        token_type.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    Tensor::<2>::from_dispatch(output).reshape([batch, seq, hidden])
}
