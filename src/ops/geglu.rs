//! GeGLU (Shazeer, "GLU Variants Improve Transformer", 2020), ModernBERT's gated feed-forward: the
//! first Linear's output split in halves, `GELU(input) · gate`, as one GPU kernel.
//!
//! Why: composed of burn's ops this is two slices, GELU's four element-wise kernels and a product, seven
//! dispatches per layer. Here one workgroup per row reads both halves and writes the product. Flex and
//! autodiff compose burn's ops.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Slice, Tensor};
use burn_cubecl::kernel::into_contiguous;
use cubecl::CubeDim;

use super::add_norm::{ROW_UNITS, row_grid};
use super::{empty_like, storage};

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait GegluBackend: Backend {
    /// `both` `[rows, 2 × width]` (input, then gate) → `GELU(input) · gate` `[rows, width]`, the exact
    /// (erf) GELU.
    fn geglu(both: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::<Self>(both)
    }
}

/// The same with burn's ops.
fn composed<B: Backend>(both: FloatTensor<B>) -> FloatTensor<B> {
    let width = both.shape()[1] / 2;
    let half = |start: usize| {
        B::float_slice(
            both.clone(),
            &[Slice::full(), Slice::from(start..start + width)],
        )
    };
    B::float_mul(B::gelu(half(0)), half(width))
}

impl GegluBackend for Flex {}

#[cfg(not(target_arch = "wasm32"))]
impl<B: GegluBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    GegluBackend for burn::backend::Autodiff<B, C>
{
}

impl GegluBackend for Cube {
    fn geglu(both: FloatTensor<Self>) -> FloatTensor<Self> {
        let both = into_contiguous(both);
        let [rows, width] = both.meta.shape().dims();
        let output = empty_like(&both, [rows, width / 2], both.dtype);
        kernel::geglu_kernel::launch(
            &output.client,
            row_grid(rows),
            CubeDim::new_1d(ROW_UNITS as u32),
            both.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            ROW_UNITS,
            storage(output.dtype),
        );
        output
    }
}

mod kernel {
    use cubecl::prelude::*;

    use crate::ops::linear::kernel::gelu_erf;

    /// One workgroup per row; its units take the row's columns `units` apart.
    #[cube(launch)]
    pub fn geglu_kernel<F: Float>(
        both: &Tensor<F>,
        output: &mut Tensor<F>,
        #[comptime] units: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let width = output.shape(1);
        let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        if row >= output.shape(0) {
            terminate!();
        }
        let mut c = UNIT_POS as usize;
        while c < width {
            let input = both[row * 2 * width + c];
            let gate = both[row * 2 * width + width + c];
            output[row * width + c] = gelu_erf::<F>(input) * gate;
            c += units;
        }
    }
}

/// `both` `[.., 2 × width]`, the input and the gate side by side → `GELU(input) · gate` `[.., width]`.
pub fn geglu<const D: usize>(both: Tensor<D>) -> Tensor<D> {
    let mut dims = both.dims();
    let width = dims[D - 1];
    dims[D - 1] = width / 2;
    let rows = both.reshape([dims[..D - 1].iter().product(), width]);
    Tensor::<2>::from_dispatch(Dispatch::geglu(rows.into_dispatch())).reshape(dims)
}
