//! "Add & Norm": `LayerNorm(x + residual)`, after every attention block and feed-forward network (and on
//! the embeddings' sum), as one GPU kernel.
//!
//! Why: burn's cube backend composes LayerNorm from ~9 ops (two reductions and the element-wise steps),
//! plus one for the residual add: 10 dispatches, 13 times per MiniLM forward. Here one invocation
//! normalises one row (mean, then variance about it, as PyTorch does), with no barrier. The CPU (flex,
//! whose `layer_norm` is already one pass) and autodiff keep burn's ops.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::LayerNorm;
use burn::tensor::{Shape, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::{CubeCount, CubeDim};

const WORKGROUP: u32 = 64;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait AddNormBackend: Backend {
    /// `input`, `residual` `[rows, hidden]`; `gamma`, `beta` `[hidden]` → `[rows, hidden]`.
    fn add_norm(
        input: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(Self::float_add(input, residual), gamma, Some(beta), epsilon)
    }
}

impl AddNormBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: AddNormBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    AddNormBackend for burn::backend::Autodiff<B, C>
{
}

impl AddNormBackend for Cube {
    fn add_norm(
        input: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let [input, residual, gamma, beta] = [input, residual, gamma, beta].map(into_contiguous);
        let [rows, hidden] = input.shape().dims();
        let dtype = input.dtype;
        let output = empty_device_dtype(
            input.client.clone(),
            input.device.clone(),
            Shape::new([rows, hidden]),
            dtype,
        );
        kernel::add_norm_kernel::launch(
            &output.client,
            CubeCount::Static((rows as u32).div_ceil(WORKGROUP), 1, 1),
            CubeDim::new_1d(WORKGROUP),
            input.into_tensor_arg(),
            residual.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            epsilon as f32,
            burn::backend::cubecl::dtype_to_storage_type(dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    pub fn add_norm_kernel<F: Float>(
        input: &Tensor<F>,
        residual: &Tensor<F>,
        gamma: &Tensor<F>,
        beta: &Tensor<F>,
        output: &mut Tensor<F>,
        epsilon: f32,
        #[define(F)] _dtype: ElemType,
    ) {
        let hidden = output.shape(1);
        if ABSOLUTE_POS >= output.shape(0) {
            terminate!();
        }
        let start = ABSOLUTE_POS * hidden;

        let mut sum = F::new(0.0);
        for k in 0..hidden {
            sum += input[start + k] + residual[start + k];
        }
        let mean = sum / F::cast_from(hidden as u32);
        let mut squares = F::new(0.0);
        for k in 0..hidden {
            let centred = input[start + k] + residual[start + k] - mean;
            squares += centred * centred;
        }
        let inv_std =
            F::new(1.0) / (squares / F::cast_from(hidden as u32) + F::cast_from(epsilon)).sqrt();
        for k in 0..hidden {
            let centred = input[start + k] + residual[start + k] - mean;
            output[start + k] = centred * inv_std * gamma[k] + beta[k];
        }
    }
}

/// `layer_norm(input + residual)` for `[batch, seq, hidden]` tensors; `epsilon` is the config's
/// `layer_norm_eps` (burn's `LayerNorm` keeps its own private).
pub fn add_norm(
    layer_norm: &LayerNorm,
    epsilon: f64,
    input: Tensor<3>,
    residual: Tensor<3>,
) -> Tensor<3> {
    let [batch, seq, hidden] = input.dims();
    let beta = match &layer_norm.beta {
        Some(beta) => beta.val(),
        None => Tensor::zeros([hidden], &input.device()),
    };
    let rows = |x: Tensor<3>| x.reshape([batch * seq, hidden]).into_dispatch();
    let output = Dispatch::add_norm(
        rows(input),
        rows(residual),
        layer_norm.gamma.val().into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    Tensor::<2>::from_dispatch(output).reshape([batch, seq, hidden])
}
