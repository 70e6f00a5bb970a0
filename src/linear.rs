//! Every Linear layer of the model, `x·W + b` (optionally followed by GELU), as one GPU kernel.
//!
//! Why our own kernel: without autotune (whose candidates fail WGSL validation in Chrome), burn's wgpu
//! backend runs cubecl's general matmul, which stages tiles through workgroup memory behind barriers.
//! Profiled on WebGPU (SwiftShader), its 36 dispatches per MiniLM forward took 3.8 s of 4.4 s. This
//! kernel needs no shared memory and no barrier: each invocation accumulates a 4×4 output tile in
//! registers, reading `x` rows and `W` columns that its neighbours also read (so caches serve them),
//! and adds the bias (and GELU) before its single write. On the CPU (flex) and under autodiff the
//! trait's default body composes burn's own ops, so training and the CPU path are unchanged.

use burn::backend::TensorMetadata;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::{Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::{CubeCount, CubeDim};

/// Rows × columns of output each invocation computes.
const TILE: usize = 4;
/// Invocations per workgroup.
const WORKGROUP: u32 = 64;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait LinearBackend: Backend {
    /// `input` `[rows, in]`, `weight` `[in, out]`, `bias` `[out]` → `[rows, out]`.
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        let out = bias.shape()[0];
        let output = Self::float_add(
            Self::float_matmul(input, weight),
            Self::float_reshape(bias, Shape::new([1, out])),
        );
        if gelu { Self::gelu(output) } else { output }
    }
}

impl LinearBackend for Flex {}

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
        let (input, weight, bias) = (
            into_contiguous(input),
            into_contiguous(weight),
            into_contiguous(bias),
        );
        let [rows, _] = input.meta.shape().dims();
        let [_, cols] = weight.meta.shape().dims();
        let dtype = input.dtype;
        let output = empty_device_dtype(
            input.client.clone(),
            input.device.clone(),
            Shape::new([rows, cols]),
            dtype,
        );
        let tiles = rows.div_ceil(TILE) * cols.div_ceil(TILE);
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
        #[define(F)] _dtype: ElemType,
    ) {
        let rows = output.shape(0);
        let cols = output.shape(1);
        let depth = input.shape(1);
        let col_tiles = cols.div_ceil(4);
        let tile = ABSOLUTE_POS;
        if tile >= rows.div_ceil(4) * col_tiles {
            terminate!();
        }
        let row0 = tile / col_tiles * 4;
        let col0 = tile % col_tiles * 4;

        // Edge tiles read clamped rows/columns (in bounds) and skip writing them.
        let mut row_start = Array::<usize>::new(4usize);
        let mut col = Array::<usize>::new(4usize);
        #[unroll]
        for i in 0..4 {
            row_start[i] = select(row0 + i < rows, row0 + i, rows - 1) * depth;
            col[i] = select(col0 + i < cols, col0 + i, cols - 1);
        }

        let mut acc = Array::<F>::new(16usize);
        #[unroll]
        for i in 0..16 {
            acc[i] = F::new(0.0);
        }
        let mut w = Array::<F>::new(4usize);
        for k in 0..depth {
            let w_row = k * cols;
            #[unroll]
            for j in 0..4 {
                w[j] = weight[w_row + col[j]];
            }
            #[unroll]
            for i in 0..4 {
                let x = input[row_start[i] + k];
                #[unroll]
                for j in 0..4 {
                    acc[i * 4 + j] += x * w[j];
                }
            }
        }

        #[unroll]
        for i in 0..4 {
            if row0 + i < rows {
                #[unroll]
                for j in 0..4 {
                    if col0 + j < cols {
                        let mut y = acc[i * 4 + j] + bias[col[j]];
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

/// A burn `Linear` (weight `[in, out]`) on `input` `[batch, seq, in]`, GELU fused when `gelu`.
pub fn linear(layer: &Linear, input: Tensor<3>, gelu: bool) -> Tensor<3> {
    let [batch, seq, width] = input.dims();
    let bias = match &layer.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([layer.weight.dims()[1]], &input.device()),
    };
    let output = Dispatch::linear(
        input.reshape([batch * seq, width]).into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.into_dispatch(),
        gelu,
    );
    let output = Tensor::<2>::from_dispatch(output);
    let out = output.dims()[1];
    output.reshape([batch, seq, out])
}
