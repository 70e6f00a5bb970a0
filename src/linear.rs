//! Every Linear layer of the model, `x·W + b` (optionally followed by GELU), as one GPU kernel.
//!
//! Why our own kernel: without autotune (whose candidates fail WGSL validation in Chrome), burn's wgpu
//! backend runs cubecl's general matmul, which stages tiles through workgroup memory behind barriers.
//! Profiled on WebGPU (SwiftShader), its 36 dispatches per MiniLM forward took 3.8 s of 4.4 s. This
//! kernel needs no shared memory and no barrier: each invocation accumulates an 8×8 output tile in
//! registers, reading `x` rows and `W` columns that its neighbours also read (so caches serve them),
//! and adds the bias (and GELU) before its single write. In the browser's CPU path the same job goes to
//! [`crate::cpu_kernels`]; natively on the CPU and under autodiff the trait's default body composes burn's
//! own ops, so training is unchanged.

use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::{DType, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_flex::FlexTensor;
use cubecl::{CubeCount, CubeDim};

use crate::cpu_kernels::{self, Epilogue, Matrix};

/// Rows and columns of output each invocation computes. Measured on SwiftShader at 1×128 (Linear kernels'
/// time per forward): 4×4 1174 ms, 8×4 858, 8×8 602, 16×8 526 (but a single workgroup at 1×16), 16×16 564.
const TILE_ROWS: usize = 8;
const TILE_COLS: usize = 8;
/// Invocations per workgroup.
const WORKGROUP: u32 = 64;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait LinearBackend: Backend {
    /// `input` `[rows, in]`, `weight` `[in, out]` (any strides), `bias` `[out]` → `[rows, out]`.
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        composed::<Self>(input, weight, bias, gelu)
    }
}

/// The same with burn's own ops (autodiff, and shapes or dtypes our kernels do not take).
fn composed<B: Backend>(
    input: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    gelu: bool,
) -> FloatTensor<B> {
    let out = bias.shape()[0];
    let output = B::float_add(
        B::float_matmul(input, weight),
        B::float_reshape(bias, Shape::new([1, out])),
    );
    if gelu { B::gelu(output) } else { output }
}

/// On the CPU path in the browser, our single-threaded SIMD kernel ([`crate::cpu_kernels`]); natively
/// flex's gemm runs on all cores.
impl LinearBackend for Flex {
    fn linear(input: FlexTensor, weight: FlexTensor, bias: FlexTensor, gelu: bool) -> FlexTensor {
        if cfg!(target_arch = "wasm32")
            && let Some(output) = flex_linear(&input, &weight, &bias, gelu)
        {
            return output;
        }
        composed::<Self>(input, weight, bias, gelu)
    }
}

/// [`cpu_kernels::gemm`] when everything is f32 and the weight's rows are contiguous (not the tied
/// decoder's transposed view); `None` otherwise.
fn flex_linear(
    input: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    gelu: bool,
) -> Option<FlexTensor> {
    if [input, weight, bias]
        .iter()
        .any(|t| t.dtype() != DType::F32)
    {
        return None;
    }
    let ([rows, depth], [_, cols]) = (input.shape().dims(), weight.shape().dims());
    let layout = weight.layout();
    let row_stride = layout.strides()[0];
    if cols > 1 && layout.strides()[1] != 1 || row_stride < cols as isize {
        return None;
    }
    let weight = Matrix {
        data: &weight.storage::<f32>()[layout.start_offset()..],
        row_stride: row_stride as usize,
    };
    let (input, bias) = (input.to_contiguous(), bias.to_contiguous());
    let input = Matrix {
        data: input.as_slice::<f32>()?,
        row_stride: depth,
    };
    let mut output = vec![0.0; rows * cols];
    let epilogue = Epilogue {
        bias: Some(bias.as_slice::<f32>()?),
        gelu,
    };
    cpu_kernels::gemm(
        (rows, cols, depth),
        input,
        weight,
        &mut output,
        cols,
        epilogue,
    );
    Some(FlexTensor::from_data(TensorData::new(output, [rows, cols])))
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: LinearBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    LinearBackend for burn::backend::Autodiff<B, C>
{
}

impl LinearBackend for Cube {
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        // The weight is read through its strides: a transposed view (the tied MLM decoder) needs no copy.
        let (input, bias) = (into_contiguous(input), into_contiguous(bias));
        let [rows, _] = input.meta.shape().dims();
        let [_, cols] = weight.meta.shape().dims();
        let dtype = input.dtype;
        let output = empty_device_dtype(
            input.client.clone(),
            input.device.clone(),
            Shape::new([rows, cols]),
            dtype,
        );
        let tiles = rows.div_ceil(TILE_ROWS) * cols.div_ceil(TILE_COLS);
        let cube_count = CubeCount::Static((tiles as u32).div_ceil(WORKGROUP), 1, 1);
        kernel::linear_kernel::launch(
            &output.client,
            cube_count,
            CubeDim::new_1d(WORKGROUP),
            input.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            gelu,
            TILE_ROWS,
            TILE_COLS,
            burn::backend::cubecl::dtype_to_storage_type(dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub fn linear_kernel<F: Float>(
        input: &Tensor<F>,
        weight: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        #[comptime] gelu: bool,
        #[comptime] tile_rows: usize,
        #[comptime] tile_cols: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let rows = output.shape(0);
        let cols = output.shape(1);
        let depth = input.shape(1);
        let col_tiles = cols.div_ceil(tile_cols);
        let tile = ABSOLUTE_POS;
        if tile >= rows.div_ceil(tile_rows) * col_tiles {
            terminate!();
        }
        let row0 = tile / col_tiles * tile_rows;
        let col0 = tile % col_tiles * tile_cols;

        // Edge tiles read clamped rows/columns (in bounds) and skip writing them.
        let mut row_start = Array::<usize>::new(tile_rows);
        #[unroll]
        for i in 0..tile_rows {
            row_start[i] = select(row0 + i < rows, row0 + i, rows - 1) * depth;
        }
        let mut col_offset = Array::<usize>::new(tile_cols);
        #[unroll]
        for j in 0..tile_cols {
            col_offset[j] = select(col0 + j < cols, col0 + j, cols - 1) * weight.stride(1);
        }

        let mut acc = Array::<F>::new(tile_rows * tile_cols);
        #[unroll]
        for i in 0..tile_rows * tile_cols {
            acc[i] = F::new(0.0);
        }
        let mut w = Array::<F>::new(tile_cols);
        for k in 0..depth {
            let w_row = k * weight.stride(0);
            #[unroll]
            for j in 0..tile_cols {
                w[j] = weight[w_row + col_offset[j]];
            }
            #[unroll]
            for i in 0..tile_rows {
                let x = input[row_start[i] + k];
                #[unroll]
                for j in 0..tile_cols {
                    acc[i * tile_cols + j] += x * w[j];
                }
            }
        }

        #[unroll]
        for i in 0..tile_rows {
            if row0 + i < rows {
                #[unroll]
                for j in 0..tile_cols {
                    if col0 + j < cols {
                        let mut y = acc[i * tile_cols + j] + bias[col0 + j];
                        if gelu {
                            // Hugging Face's "gelu": x·Φ(x) with the exact erf.
                            y = y * F::new(0.5) * (F::new(1.0) + (y * F::new(0.70710677)).erf());
                        }
                        output[(row0 + i) * cols + col0 + j] = y;
                    }
                }
            }
        }
    }
}

/// A burn `Linear` (weight `[in, out]`) on `input` `[.., in]`, GELU fused when `gelu`.
pub fn linear<const D: usize>(layer: &Linear, input: Tensor<D>, gelu: bool) -> Tensor<D> {
    let mut dims = input.dims();
    let [width, out] = layer.weight.dims();
    let bias = match &layer.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([out], &input.device()),
    };
    let rows = input.reshape([dims[..D - 1].iter().product(), width]);
    dims[D - 1] = out;
    affine(rows, layer.weight.val(), bias, gelu).reshape(dims)
}

/// `input·weight + bias` (then GELU when `gelu`): `input` `[rows, in]`, `weight` `[in, out]`, possibly a
/// transposed view, `bias` `[out]`.
pub fn affine(input: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>, gelu: bool) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::linear(
        input.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        gelu,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for gelu in [false, true] {
            let got = flex_linear(&input, &weight, &bias, gelu).expect("row-major f32 weight");
            let want = composed::<Flex>(input.clone(), weight.clone(), bias.clone(), gelu);
            let diff = cpu_kernels::max_abs_diff(got, want);
            assert!(diff < 1e-5, "gelu={gelu}: max diff {diff}");
        }
        // A transposed view (the tied decoder) is left to burn's matmul.
        let transposed = tensor([35, 40], 3.0).transpose(0, 1);
        assert!(flex_linear(&input, &transposed, &bias, false).is_none());
    }
}
