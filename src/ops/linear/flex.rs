//! The browser's CPU path: flex tensors handed to [`super::super::cpu`]'s single-threaded SIMD kernels,
//! where they can take them (f32 rows; a weight's rows contiguous), else `None` and burn's ops.

use burn::backend::TensorMetadata;
use burn::tensor::quantization::QuantScheme;
use burn::tensor::{DType, TensorData};
use burn_flex::{FlexQTensor, FlexTensor};

use super::{q8_scheme, q8_table_scheme};
use crate::ops::cpu::q8::Q8Matrix;
use crate::ops::cpu::{self, Epilogue, Matrix};

/// [`cpu::q8::gemm_q8`] when the weight is a contiguous `[in, out]` in the CPU's [`q8_scheme`] and the
/// rest f32; `None` otherwise.
pub(super) fn q8_linear(
    input: &FlexTensor,
    weight: &FlexQTensor,
    bias: Option<&FlexTensor>,
    gelu: bool,
) -> Option<FlexTensor> {
    let (weight, [depth, cols]) = int8(input, weight, bias, q8_scheme(false))?;
    let rows = input.shape()[0];
    on_f32_rows(input, bias, cols, gelu, |input, output, epilogue| {
        cpu::q8::gemm_q8((rows, cols, depth), input, weight, output, cols, epilogue)
    })
}

/// [`cpu::q8::gemm_q8_transposed`] when the weight is a contiguous `[out, in]` in the CPU's
/// [`q8_table_scheme`] and the rest f32; `None` otherwise.
pub(super) fn q8_linear_transposed(
    input: &FlexTensor,
    weight: &FlexQTensor,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    let (weight, [cols, depth]) = int8(input, weight, bias, q8_table_scheme(false))?;
    let rows = input.shape()[0];
    on_f32_rows(input, bias, cols, false, |input, output, epilogue| {
        cpu::q8::gemm_q8_transposed((rows, cols, depth), input, weight, output, cols, epilogue)
    })
}

/// `weight`'s int8 values and scales, and its shape, if it is contiguous in `scheme` and the rest f32.
fn int8<'a>(
    input: &FlexTensor,
    weight: &'a FlexQTensor,
    bias: Option<&FlexTensor>,
    scheme: QuantScheme,
) -> Option<(Q8Matrix<'a>, [usize; 2])> {
    let values = weight.tensor();
    if weight.dtype() != DType::QFloat(scheme)
        || [Some(input), bias]
            .iter()
            .flatten()
            .any(|t| t.dtype() != DType::F32)
        || !values.layout().is_contiguous()
    {
        return None;
    }
    let matrix = Q8Matrix {
        values: &values.storage::<i8>()[values.layout().start_offset()..],
        scales: weight.scales(),
    };
    Some((matrix, values.shape().dims()))
}

/// `kernel(input, output, epilogue)` with `input` `[rows, depth]` and `bias` (if any) as f32 rows, into a
/// new `[rows, cols]`: the flex glue both CPU kernels share.
fn on_f32_rows(
    input: &FlexTensor,
    bias: Option<&FlexTensor>,
    cols: usize,
    gelu: bool,
    kernel: impl FnOnce(Matrix, &mut [f32], Epilogue),
) -> Option<FlexTensor> {
    let [rows, depth] = input.shape().dims();
    let (input, bias) = (input.to_contiguous(), bias.map(FlexTensor::to_contiguous));
    let input = Matrix {
        data: input.as_slice::<f32>()?,
        row_stride: depth,
    };
    let mut output = vec![0.0; rows * cols];
    let bias = match &bias {
        Some(bias) => Some(bias.as_slice::<f32>()?),
        None => None,
    };
    kernel(input, &mut output, Epilogue { bias, gelu });
    Some(FlexTensor::from_data(TensorData::new(output, [rows, cols])))
}

/// [`cpu::gemm`] when everything is f32 and the weight's rows are contiguous, [`cpu::gemm_transposed`]
/// when it is a transposed view of contiguous rows (the tied decoder's); `None` otherwise.
pub(super) fn linear(
    input: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    gelu: bool,
) -> Option<FlexTensor> {
    if [Some(input), Some(weight), bias]
        .iter()
        .flatten()
        .any(|t| t.dtype() != DType::F32)
    {
        return None;
    }
    let ([rows, depth], [_, cols]) = (input.shape().dims(), weight.shape().dims());
    let layout = weight.layout();
    let data = &weight.storage::<f32>()[layout.start_offset()..];
    let [row_stride, col_stride] = [0, 1].map(|d| layout.strides()[d]);
    // A transposed view of `[out, in]` rows (the tied decoder): each column's weights contiguous.
    if depth > 1 && row_stride == 1 && col_stride >= depth as isize {
        let weight = Matrix {
            data,
            row_stride: col_stride as usize,
        };
        return on_f32_rows(input, bias, cols, gelu, |input, output, epilogue| {
            cpu::gemm_transposed((rows, cols, depth), input, weight, output, cols, epilogue)
        });
    }
    if cols > 1 && col_stride != 1 || row_stride < cols as isize {
        return None;
    }
    let weight = Matrix {
        data,
        row_stride: row_stride as usize,
    };
    on_f32_rows(input, bias, cols, gelu, |input, output, epilogue| {
        cpu::gemm((rows, cols, depth), input, weight, output, cols, epilogue)
    })
}

/// An int8 tensor `shape` in `scheme` on flex for the unit tests: values over the whole int8 range, and
/// one of eleven scales for each block of 32.
#[cfg(test)]
pub(crate) fn int8_test_tensor(shape: [usize; 2], scheme: QuantScheme) -> FlexQTensor {
    use burn::backend::{Flex, ops::QTensorOps};
    let len = shape[0] * shape[1];
    let values: Vec<i8> = (0..len)
        .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
        .collect();
    let scales: Vec<f32> = (0..len / cpu::q8::BLOCK)
        .map(|i| 0.002 + (i % 11) as f32 * 0.001)
        .collect();
    let data = TensorData::quantized(values, shape, scheme, &scales, None);
    Flex::q_from_data(data, &Default::default())
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::ops::QTensorOps;
    use burn::tensor::{FloatDType, Shape};

    use super::*;
    use crate::ops::linear::composed;

    fn tensor(shape: [usize; 2], seed: f32) -> FlexTensor {
        let values = (0..shape[0] * shape[1])
            .map(|i| (i as f32 * 0.37 + seed).sin())
            .collect();
        FlexTensor::from_data(TensorData::new::<f32, _>(values, shape))
    }

    /// The browser's CPU kernel through its flex glue, against burn's own ops on the same tensors.
    #[test]
    fn flex_linear_matches_burn_ops() {
        let (input, weight) = (tensor([13, 40], 1.0), tensor([40, 35], 2.0));
        let bias = FlexTensor::from_data(TensorData::new(
            (0..35).map(|i| i as f32 * 0.1).collect(),
            [35],
        ));
        for (gelu, bias) in [(false, Some(&bias)), (true, Some(&bias)), (true, None)] {
            let got = linear(&input, &weight, bias, gelu).expect("row-major f32 weight");
            let want = composed::<Flex>(input.clone(), weight.clone(), bias.cloned(), gelu);
            let diff = cpu::max_abs_diff(got, want);
            assert!(
                diff < 1e-5,
                "gelu={gelu} bias={}: max diff {diff}",
                bias.is_some()
            );
        }
        // A transposed view (the tied decoder) goes to the kernel that reads its rows.
        let transposed = tensor([35, 40], 3.0).transpose(0, 1);
        let got = linear(&input, &transposed, Some(&bias), false).expect("transposed f32 weight");
        let want = composed::<Flex>(input.clone(), transposed, Some(bias.clone()), false);
        let diff = cpu::max_abs_diff(got, want);
        assert!(diff < 1e-5, "transposed: max diff {diff}");
    }

    /// The int8 kernel through its flex glue, against burn's own widening of the same quantised tensor:
    /// the scales must be where burn's block layout puts them.
    #[test]
    fn flex_q8_linear_matches_burn_dequantized() {
        let (rows, depth, cols) = (7, 64, 24);
        let input = tensor([rows, depth], 1.0);
        let weight = int8_test_tensor([depth, cols], q8_scheme(false));
        let bias = tensor([1, cols], 2.0).reshape(Shape::new([cols]));
        for gelu in [false, true] {
            let got = q8_linear(&input, &weight, Some(&bias), gelu).expect("q8 weight");
            let widened = Flex::dequantize(weight.clone(), FloatDType::F32);
            let want = composed::<Flex>(input.clone(), widened, Some(bias.clone()), gelu);
            let diff = cpu::max_abs_diff(got, want);
            // Only the activations' 16-bit rounding differs: ≤ Σ|w| · max|x| / 32767 / 2 ≈ 2e-4 here.
            assert!(diff < 5e-4, "gelu={gelu}: max diff {diff}");
        }
    }

    /// The same for a weight stored `[out, in]` (a q8 word table, the tied decoder's).
    #[test]
    fn flex_q8_linear_transposed_matches_burn_dequantized() {
        let (rows, depth, cols) = (6, 96, 13);
        let input = tensor([rows, depth], 1.0);
        let weight = int8_test_tensor([cols, depth], q8_table_scheme(false));
        let bias = tensor([1, cols], 2.0).reshape(Shape::new([cols]));
        let got = q8_linear_transposed(&input, &weight, Some(&bias)).expect("q8 table");
        let widened = Flex::dequantize(weight, FloatDType::F32).transpose(0, 1);
        let want = composed::<Flex>(input, widened, Some(bias), false);
        let diff = cpu::max_abs_diff(got, want);
        assert!(diff < 5e-4, "max diff {diff}");
    }
}
