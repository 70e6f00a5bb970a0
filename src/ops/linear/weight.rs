//! A Linear's weight as the GPU kernels read it: f32 through its strides (a transposed view needs no
//! copy), or f16 and int8 packed in words, which the kernels unpack as they read: a model's f16 or int8
//! weights get no f32 copy on the GPU, and no adapter needs `shader-f16`. An f16 or int8 word-embedding
//! table is read the same way, transposed, by the tied MLM decoder and by the embeddings' lookup (row
//! `id` of the table is the decoder's column `id`).

use burn::backend::Cube;
use burn::backend::ops::{FloatTensorOps, QTensorOps};
use burn::tensor::{DType, FloatDType};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::{q8_scheme, q8_table_scheme};
use crate::ops::{empty_like, placeholder};

/// A Linear's weight as the GPU kernels read it (made per call and moved into the launch, never kept).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Weight {
    /// `[in, out]`, any strides: a transposed view (the tied MLM decoder) needs no copy.
    F32(CubeTensor),
    /// F16 (an fp16 model), as `[in, out / 2]` words, each two neighbouring columns' halves (the lower
    /// first), so that no adapter needs `shader-f16` to read them. Unpacked in the kernels.
    F16 { values: CubeTensor },
    /// F16 through a transposed view (the tied MLM decoder reading the f16 word-embedding table
    /// `[out, in]`), as `[out, in / 2]` words, each two neighbouring depths' halves. Unpacked in the kernels.
    F16Transposed { values: CubeTensor },
    /// Int8 in the GPU's [`q8_scheme`]: `values` `[in, out / 4]` words, each four neighbouring columns'
    /// bytes (the lowest first); `scales` `[in / Q8_BLOCK, out]`. Unpacked in the kernels.
    Q8 {
        values: CubeTensor,
        scales: CubeTensor,
    },
    /// Int8 stored `[out, in]` in [`q8_table_scheme`] (the q8 word-embedding table): `values`
    /// `[out, in / 4]` words, each four neighbouring depths' bytes; `scales` `[out, in / Q8_BLOCK]`.
    Q8Transposed {
        values: CubeTensor,
        scales: CubeTensor,
    },
}

/// How a kernel reads its weight (compile time): f32 through its strides, or packed in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stored {
    F32,
    F16,
    F16Transposed,
    Q8,
    Q8Transposed,
}

impl Weight {
    /// `weight` as the kernels read it, never widened into a second, f32 copy: f32, f16 with rows (or,
    /// transposed, columns) of whole words, or int8 in the GPU's [`q8_scheme`] (or, stored `[out, in]`,
    /// [`q8_table_scheme`]); anything else (no model holds it) is widened.
    pub(crate) fn of(weight: CubeTensor) -> Self {
        match weight.dtype {
            DType::F32 => Weight::F32(weight),
            DType::F16 => {
                if let Some(values) = halves_as_words(&weight, false) {
                    Weight::F16 { values }
                } else if let Some(values) = halves_as_words(&weight, true) {
                    Weight::F16Transposed { values }
                } else {
                    Weight::F32(widened(weight))
                }
            }
            DType::QFloat(scheme) if scheme == q8_scheme(true) => {
                let (values, scales) = int8_handles(&weight);
                Weight::Q8 { values, scales }
            }
            DType::QFloat(scheme) if scheme == q8_table_scheme(true) => {
                let (values, scales) = int8_handles(&weight);
                Weight::Q8Transposed { values, scales }
            }
            _ => Weight::F32(widened(weight)),
        }
    }

    pub(super) fn cols(&self) -> usize {
        match self {
            Weight::F32(weight) => weight.meta.shape()[1],
            Weight::F16 { values } => 2 * values.meta.shape()[1],
            Weight::F16Transposed { values } => values.meta.shape()[0],
            Weight::Q8 { scales, .. } => scales.meta.shape()[1],
            Weight::Q8Transposed { values, .. } => values.meta.shape()[0],
        }
    }

    /// The kernels' three weight bindings (`weight`, `values`, `scales`), placeholders beside `like`
    /// for those this weight does not have, and how it is stored.
    pub(super) fn bindings(
        self,
        like: &CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor, Stored) {
        // Two-dimensional, as the kernels read the width of `values` whatever the weight.
        let no_values = || empty_like(like, [1, 1], DType::U32);
        match self {
            Weight::F32(weight) => (weight, no_values(), placeholder(like), Stored::F32),
            Weight::F16 { values } => (placeholder(like), values, placeholder(like), Stored::F16),
            Weight::F16Transposed { values } => (
                placeholder(like),
                values,
                placeholder(like),
                Stored::F16Transposed,
            ),
            Weight::Q8 { values, scales } => (placeholder(like), values, scales, Stored::Q8),
            Weight::Q8Transposed { values, scales } => {
                (placeholder(like), values, scales, Stored::Q8Transposed)
            }
        }
    }
}

/// A lookup table `[n, width]` as the embeddings' kernel reads it, in words: f16 (two halves a word) and
/// int8 in [`q8_table_scheme`] (four bytes a word, with its block scales) as stored, as the tied decoder
/// reads them (transposed: row `id` is its column `id`); anything else as f32 rows, a value a word. Its
/// words, its scales (else a placeholder beside `like`), and how it is stored.
pub(crate) fn table_words(
    table: CubeTensor,
    like: &CubeTensor,
) -> (CubeTensor, CubeTensor, Stored) {
    match table.dtype {
        DType::F16 => {
            if let Some(values) = halves_as_words(&table, false) {
                return (values, placeholder(like), Stored::F16Transposed);
            }
        }
        DType::QFloat(scheme) if scheme == q8_table_scheme(true) => {
            let (values, scales) = int8_handles(&table);
            return (values, scales, Stored::Q8Transposed);
        }
        _ => {}
    }
    let table = into_contiguous(widened(table));
    let words = CubeTensor {
        dtype: DType::U32,
        qparams: None,
        ..table
    };
    (words, placeholder(like), Stored::F32)
}

/// An int8 tensor's values (packed in words) and block scales.
fn int8_handles(weight: &CubeTensor) -> (CubeTensor, CubeTensor) {
    weight
        .quantized_handles()
        .expect("a quantised tensor has values and scales")
}

/// `weight` as f32: as it is if it is, else a widened copy (dequantised, if int8).
fn widened(weight: CubeTensor) -> CubeTensor {
    match weight.dtype {
        DType::F32 => weight,
        DType::QFloat(_) => Cube::dequantize(weight, FloatDType::F32),
        _ => Cube::float_cast(weight, FloatDType::F32),
    }
}

/// An f16 `[in, out]` matrix's buffer read as `[in, out / 2]` words (`transposed`: as `[out, in / 2]`,
/// the matrix a transposed view of its buffer), if those rows are contiguous and start on whole words.
fn halves_as_words(weight: &CubeTensor, transposed: bool) -> Option<CubeTensor> {
    let [mut rows, mut cols] = weight.meta.shape().dims();
    let (mut row_stride, mut col_stride) = (weight.meta.strides()[0], weight.meta.strides()[1]);
    if transposed {
        (rows, cols) = (cols, rows);
        (row_stride, col_stride) = (col_stride, row_stride);
    }
    let offset = weight.handle.offset_start.unwrap_or(0);
    if col_stride != 1
        || !cols.is_multiple_of(2)
        || !row_stride.is_multiple_of(2)
        || !offset.is_multiple_of(4)
    {
        return None;
    }
    Some(CubeTensor {
        client: weight.client.clone(),
        handle: weight.handle.clone(),
        meta: Box::new(cubecl::zspace::metadata::Metadata::new(
            [rows, cols / 2],
            [row_stride / 2, 1],
        )),
        device: weight.device.clone(),
        dtype: DType::U32,
        qparams: None,
    })
}

/// The kernels' reads of packed weights.
pub(crate) mod unpack {
    use crate::ops::cpu::q8::BLOCK as Q8_BLOCK;
    use cubecl::prelude::*;

    /// The weight's value at depth `k`, column `c`, from its int8 `values` (four columns a word) and block
    /// `scales`.
    #[cube]
    pub fn q8_weight<F: Float>(values: &Tensor<u32>, scales: &Tensor<F>, k: usize, c: usize) -> F {
        let word = values[k * values.stride(0) + c / 4];
        let byte = byte_of::<F>(word, (c % 4) as u32);
        byte * scales[k / Q8_BLOCK * scales.stride(0) + c * scales.stride(1)]
    }

    /// The same from int8 `values` stored transposed (`[out, in / 4]`: four depths a word) and
    /// `scales` `[out, in / Q8_BLOCK]`.
    #[cube]
    pub fn q8_weight_transposed<F: Float>(
        values: &Tensor<u32>,
        scales: &Tensor<F>,
        k: usize,
        c: usize,
    ) -> F {
        let word = values[c * values.stride(0) + k / 4];
        let byte = byte_of::<F>(word, (k % 4) as u32);
        byte * scales[c * scales.stride(0) + k / Q8_BLOCK * scales.stride(1)]
    }

    /// The weight's value at depth `k`, column `c`, from its f16 `values` (two columns a word).
    #[cube]
    pub fn f16_weight<F: Float>(values: &Tensor<u32>, k: usize, c: usize) -> F {
        let word = values[k * values.stride(0) + c / 2];
        half_of::<F>(word, (c % 2) as u32)
    }

    /// The same from f16 `values` stored transposed (`[out, in / 2]`: two depths a word).
    #[cube]
    pub fn f16_weight_transposed<F: Float>(values: &Tensor<u32>, k: usize, c: usize) -> F {
        let word = values[c * values.stride(0) + k / 2];
        half_of::<F>(word, (k % 2) as u32)
    }

    /// Half `h` of `word` (the lower is 0) as an f32.
    #[cube]
    pub fn half_of<F: Float>(word: u32, h: u32) -> F {
        half::<F>((word >> (16 * h)) & 0xffff)
    }

    /// The f16 whose bits are `h` (its lower 16) as an f32: sign, exponent rebased from 15 to 127 and
    /// mantissa moved up; a subnormal (exponent 0) is its mantissa × 2⁻²⁴. The checkpoints hold no
    /// infinity or NaN (refused at load).
    #[cube]
    pub fn half<F: Float>(h: u32) -> F {
        let exponent = (h >> 10) & 31;
        let mantissa = h & 1023;
        let sign = (h & 32768) << 16;
        let normal = F::reinterpret(sign | ((exponent + 112) << 23) | (mantissa << 13));
        let tiny = F::cast_from(mantissa) * F::new(5.9604645e-8);
        select(exponent == 0, select(sign != 0, -tiny, tiny), normal)
    }

    /// Byte `b` of `word` (the lowest is 0) as a two's-complement int8: shifted to the top, then back
    /// down arithmetically, which extends its sign.
    #[cube]
    pub fn byte_of<F: Float>(word: u32, b: u32) -> F {
        F::cast_from(i32::cast_from(word << (24 - 8 * b)) >> 24)
    }
}
