//! The input representation in one GPU kernel: look up each token's word, segment and position
//! embeddings, add them, LayerNorm.
//!
//! Why: composed of burn's ops this is three gathers, two adds and the norm (six dispatches per forward,
//! each a round of launch overhead on a real GPU). Here one workgroup per token does it all, with the
//! row reductions of [`super::add_norm`], and reads an f16 or int8 word table as it is stored (as the
//! Linear kernels read packed weights), so an fp16 or q8 model's table is never widened on the GPU.
//! An adapter granting fewer storage buffers than that kernel binds gets the LayerNorm as a second
//! kernel. Flex and autodiff compose burn's ops; flex widens only the int8 rows it looks up.

use burn::backend::ops::{FloatTensorOps, QTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor, QuantizedTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, FloatDType, Int, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::{FlexQTensor, FlexTensor};
use cubecl::CubeDim;
use cubecl::prelude::ComptimeOptionArgs;

use super::add_norm::{AddNormBackend, ROW_UNITS, row_grid};
use super::linear::weight::table_words;
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
        let words = Self::float_select(word, 0, input_ids.clone());
        sum_norm::<Self>(
            words,
            input_ids,
            token_type_ids,
            seq,
            position,
            token_type,
            gamma,
            beta,
            epsilon,
        )
    }

    /// The same from an int8 word table in [`q8_table_scheme`](super::linear::q8_table_scheme).
    #[allow(clippy::too_many_arguments)]
    fn q8_embed_norm(
        input_ids: IntTensor<Self>,
        token_type_ids: IntTensor<Self>,
        seq: usize,
        word: QuantizedTensor<Self>,
        position: FloatTensor<Self>,
        token_type: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let word = Self::dequantize(word, FloatDType::F32);
        Self::embed_norm(
            input_ids,
            token_type_ids,
            seq,
            word,
            position,
            token_type,
            gamma,
            beta,
            epsilon,
        )
    }
}

/// [`EmbeddingsBackend::embed_norm`] from the word rows `words` `[rows, hidden]` already looked up.
#[allow(clippy::too_many_arguments)]
fn sum_norm<B: Backend>(
    words: FloatTensor<B>,
    input_ids: IntTensor<B>,
    token_type_ids: IntTensor<B>,
    seq: usize,
    position: FloatTensor<B>,
    token_type: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let rows = input_ids.shape()[0];
    let device = input_ids.device();
    let int_dtype = input_ids.dtype().into();
    let mut sum = words;
    if let Some(token_type) = present(token_type) {
        let types = B::float_select(token_type, 0, token_type_ids);
        sum = B::float_add(sum, types);
    }
    if let Some(position) = present(position) {
        let positions = B::int_reshape(
            B::int_expand(
                B::int_arange(0..seq as i64, &device, int_dtype),
                Shape::new([rows / seq, seq]),
            ),
            Shape::new([rows]),
        );
        sum = B::float_add(sum, B::float_select(position, 0, positions));
    }
    B::layer_norm(sum, gamma, present(beta), epsilon)
}

impl EmbeddingsBackend for Flex {
    fn q8_embed_norm(
        input_ids: IntTensor<Self>,
        token_type_ids: IntTensor<Self>,
        seq: usize,
        word: FlexQTensor,
        position: FlexTensor,
        token_type: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let words = match int8_rows(&word, &input_ids) {
            Some(words) => words,
            None => {
                let word = Self::dequantize(word, FloatDType::F32);
                Self::float_select(word, 0, input_ids.clone())
            }
        };
        sum_norm::<Self>(
            words,
            input_ids,
            token_type_ids,
            seq,
            position,
            token_type,
            gamma,
            beta,
            epsilon,
        )
    }
}

/// Rows `ids` of an int8 table in the CPU's [`q8_table_scheme`](super::linear::q8_table_scheme) as
/// f32, the rest of the table left int8; `None` if it is stored otherwise or an id is past its end.
fn int8_rows(table: &FlexQTensor, ids: &FlexTensor) -> Option<FlexTensor> {
    let values = table.tensor();
    if table.dtype() != DType::QFloat(super::linear::q8_table_scheme(false))
        || !values.layout().is_contiguous()
    {
        return None;
    }
    let ids = ids.to_contiguous();
    let ids: Vec<usize> = match ids.dtype() {
        DType::I64 => ids.as_slice::<i64>()?.iter().map(|&i| i as usize).collect(),
        DType::I32 => ids.as_slice::<i32>()?.iter().map(|&i| i as usize).collect(),
        _ => return None,
    };
    let [n, width] = values.shape().dims();
    if ids.iter().any(|&id| id >= n) {
        return None;
    }
    let values = &values.storage::<i8>()[values.layout().start_offset()..];
    let rows = super::cpu::q8::rows(values, table.scales(), width, &ids);
    Some(FlexTensor::from_data(TensorData::new(
        rows,
        [ids.len(), width],
    )))
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: EmbeddingsBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    EmbeddingsBackend for burn::backend::Autodiff<B, C>
{
}

/// The storage buffers [`kernel::embed_norm_kernel`] binds with the LayerNorm's γ and β, cubecl's
/// metadata aside.
const EMBED_NORM_BINDINGS: u32 = 9;

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
        let (position, token_type) = (present(position), present(token_type));
        let [input_ids, token_type_ids] = [input_ids, token_type_ids].map(into_contiguous);
        let rows = input_ids.meta.shape()[0];
        let hidden = word.meta.shape()[1];
        let output = empty_like(&input_ids, [rows, hidden], gamma.dtype);
        let (word, scales, stored) = table_words(word, &output);
        let (position, has_position) = optional(position, &output);
        let (token_type, has_token_type) = optional(token_type, &output);
        // WebGPU's default is 8 storage buffers a kernel, cubecl's metadata one of them: an adapter that
        // offers no more gets the sum, then the LayerNorm in a kernel of its own.
        let fused = output.client.properties().hardware.max_bindings >= EMBED_NORM_BINDINGS;
        let norm = |tensor: Option<CubeTensor>| match tensor {
            Some(tensor) if fused => {
                ComptimeOptionArgs::Some(into_contiguous(tensor).into_tensor_arg())
            }
            _ => ComptimeOptionArgs::None,
        };
        let shape = KernelShape::of(&output.client);
        kernel::embed_norm_kernel::launch(
            &output.client,
            row_grid(rows),
            CubeDim::new_1d(ROW_UNITS as u32),
            input_ids.clone().into_tensor_arg(),
            token_type_ids.into_tensor_arg(),
            word.into_tensor_arg(),
            scales.into_tensor_arg(),
            position.into_tensor_arg(),
            token_type.into_tensor_arg(),
            norm(Some(gamma.clone())),
            norm(present(beta.clone())),
            output.clone().into_tensor_arg(),
            seq,
            epsilon as f32,
            stored,
            has_position,
            has_token_type,
            hidden.div_ceil(ROW_UNITS),
            subgroups(&output.client, shape),
            [output.dtype, input_ids.dtype].map(storage),
        );
        if fused {
            output
        } else {
            Self::norm(output, gamma, beta, epsilon)
        }
    }

    fn q8_embed_norm(
        input_ids: IntTensor<Self>,
        token_type_ids: IntTensor<Self>,
        seq: usize,
        word: QuantizedTensor<Self>,
        position: FloatTensor<Self>,
        token_type: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        // The same `CubeTensor` as a float table: `table_words` reads its scheme.
        Self::embed_norm(
            input_ids,
            token_type_ids,
            seq,
            word,
            position,
            token_type,
            gamma,
            beta,
            epsilon,
        )
    }
}

mod kernel {
    use cubecl::prelude::*;

    use crate::ops::add_norm::kernel::store_row_norm;
    use crate::ops::linear::weight::Stored;
    use crate::ops::linear::weight::unpack::{f16_weight_transposed, q8_weight_transposed};

    /// One workgroup per token. The word table is read from `word` in words (`table_words`): f32 rows a
    /// value a word, or f16 and int8 (with `word_scales`) as the tied decoder reads them (`word_stored`,
    /// transposed: row `id` is column `id`); one binding for all three. Without `gamma` the sum is
    /// written as it is, for a LayerNorm in a kernel of its own.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn embed_norm_kernel<F: Float, I: Int>(
        input_ids: &Tensor<I>,
        token_type_ids: &Tensor<I>,
        word: &Tensor<u32>,
        word_scales: &Tensor<F>,
        position: &Tensor<F>,
        token_type: &Tensor<F>,
        gamma: ComptimeOption<&Tensor<F>>,
        beta: ComptimeOption<&Tensor<F>>,
        output: &mut Tensor<F>,
        seq: usize,
        epsilon: f32,
        #[comptime] word_stored: Stored,
        #[comptime] has_position: bool,
        #[comptime] has_token_type: bool,
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
            let mut value = if word_stored == Stored::F16Transposed {
                f16_weight_transposed::<F>(word, c, id)
            } else if word_stored == Stored::Q8Transposed {
                q8_weight_transposed::<F>(word, word_scales, c, id)
            } else {
                F::reinterpret(word[id * hidden + c])
            };
            if has_token_type {
                value += token_type[type_row + c];
            }
            if has_position {
                value += position[position_row + c];
            }
            x[i] = select(k < hidden, value, F::new(0.0));
        }
        let start = row * hidden;
        #[comptime]
        match gamma {
            ComptimeOption::Some(gamma) => {
                #[comptime]
                match beta {
                    ComptimeOption::Some(beta) => store_row_norm(
                        &mut x, output, gamma, beta, start, epsilon, true, units, per_unit,
                        subgroups,
                    ),
                    // Without β, γ stands in for it, unread.
                    ComptimeOption::None => store_row_norm(
                        &mut x, output, gamma, gamma, start, epsilon, false, units, per_unit,
                        subgroups,
                    ),
                }
            }
            ComptimeOption::None =>
            {
                #[unroll]
                for i in 0..per_unit {
                    let k = UNIT_POS as usize + i * units;
                    if k < hidden {
                        output[start + k] = x[i];
                    }
                }
            }
        }
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
    let (input_ids, token_type_ids) = (rows(input_ids), rows(token_type_ids));
    let (position, token_type, beta) = (
        or_absent(position, &device).into_dispatch(),
        or_absent(token_type, &device).into_dispatch(),
        or_absent(beta, &device).into_dispatch(),
    );
    let embed_norm = match word.dtype() {
        DType::QFloat(_) => Dispatch::q8_embed_norm,
        _ => Dispatch::embed_norm,
    };
    let output = embed_norm(
        input_ids,
        token_type_ids,
        seq,
        word.into_dispatch(),
        position,
        token_type,
        gamma.into_dispatch(),
        beta,
        epsilon,
    );
    Tensor::<2>::from_dispatch(output).reshape([batch, seq, hidden])
}

#[cfg(test)]
mod tests {
    use burn::backend::ops::QTensorOps;
    use burn::backend::{Flex, TensorMetadata};
    use burn::tensor::{FloatDType, TensorData};
    use burn_flex::FlexTensor;

    use super::EmbeddingsBackend;
    use crate::ops::cpu::max_abs_diff;
    use crate::ops::linear::{int8_test_tensor, q8_table_scheme};

    /// The CPU path's lookup in an int8 table widens the rows it reads exactly as burn widens the whole
    /// table: the scales must be where burn's block layout puts them.
    #[test]
    fn flex_int8_rows_match_burn_dequantized() {
        let (n, width, seq) = (9, 64, 3);
        let word = int8_test_tensor([n, width], q8_table_scheme(false));
        let floats = |values: Vec<f32>, shape: Vec<usize>| {
            FlexTensor::from_data(TensorData::new(values, shape))
        };
        let ids = FlexTensor::from_data(TensorData::new(vec![8i64, 0, 3, 3, 5, 1], [6]));
        let types = FlexTensor::from_data(TensorData::new(vec![0i64, 1, 0, 1, 1, 0], [6]));
        let position = floats(
            (0..seq * width).map(|i| i as f32 * 1e-3).collect(),
            vec![seq, width],
        );
        let token_type = floats(
            (0..2 * width).map(|i| (i as f32).sin()).collect(),
            vec![2, width],
        );
        let gamma = floats(
            (0..width).map(|i| 1.0 + i as f32 * 0.01).collect(),
            vec![width],
        );
        let beta = floats((0..width).map(|i| i as f32 * -0.02).collect(), vec![width]);
        let got = Flex::q8_embed_norm(
            ids.clone(),
            types.clone(),
            seq,
            word.clone(),
            position.clone(),
            token_type.clone(),
            gamma.clone(),
            beta.clone(),
            1e-12,
        );
        let widened = Flex::dequantize(word, FloatDType::F32);
        let want = Flex::embed_norm(
            ids, types, seq, widened, position, token_type, gamma, beta, 1e-12,
        );
        assert_eq!(got.shape().dims::<2>(), [6, width]);
        let diff = max_abs_diff(got, want);
        assert!(diff < 1e-6, "max diff {diff}");
    }
}
