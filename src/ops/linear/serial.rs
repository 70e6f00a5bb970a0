//! The `Serial` shape, for CPU-backed adapters: each invocation accumulates a whole output tile over
//! the whole depth in registers, with no workgroup memory and no barrier.

use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use super::{Finish, Weight};
use crate::ops::{optional, storage};

/// Rows and columns of output each invocation computes. Measured on SwiftShader at 1×128 (Linear kernels'
/// time per forward): 4×4 1174 ms, 8×4 858, 8×8 602, 16×8 526 (but a single workgroup at 1×16), 16×16 564.
const TILE_ROWS: usize = 8;
const TILE_COLS: usize = 8;
/// Invocations per workgroup.
const WORKGROUP: u32 = 64;

pub(super) fn serial(input: CubeTensor, weight: Weight, mut finish: Finish) -> CubeTensor {
    let [rows, _] = input.meta.shape().dims();
    let cols = weight.cols();
    let (output, accumulate) = finish.output(&input, rows, cols);
    let (bias, has_bias) = optional(finish.bias, &output);
    let (weight, values, scales, stored) = weight.bindings(&output);
    let tiles = rows.div_ceil(TILE_ROWS) * cols.div_ceil(TILE_COLS);
    kernel::linear_kernel::launch(
        &output.client,
        CubeCount::Static((tiles as u32).div_ceil(WORKGROUP), 1, 1),
        CubeDim::new_1d(WORKGROUP),
        input.into_tensor_arg(),
        weight.into_tensor_arg(),
        values.into_tensor_arg(),
        scales.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        has_bias,
        finish.gelu,
        accumulate,
        stored,
        TILE_ROWS,
        TILE_COLS,
        storage(output.dtype),
    );
    output
}

mod kernel {
    use crate::ops::cpu::q8::BLOCK as Q8_BLOCK;
    use crate::ops::linear::kernel::gelu_erf;
    use crate::ops::linear::weight::Stored;
    use crate::ops::linear::weight::unpack::{byte_of, half_of};
    use cubecl::prelude::*;

    /// Each invocation computes a `tile_rows × tile_cols` block of the output over the whole depth, and
    /// adds the bias where `has_bias` (GELU after it, and with `accumulate` what `output` held before it
    /// is written). A packed weight (`weight` unread) is unpacked a word at a time: f16 `values` two
    /// columns a word (transposed, two depths), int8 `values` four (transposed, four depths), with
    /// `scales` reloaded once per block.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn linear_kernel<F: Float>(
        input: &Tensor<F>,
        weight: &Tensor<F>,
        values: &Tensor<u32>,
        scales: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        #[comptime] has_bias: bool,
        #[comptime] gelu: bool,
        #[comptime] accumulate: bool,
        #[comptime] stored: Stored,
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
        // Int8 stored transposed: each column's row of scales.
        let mut scale_offset = Array::<usize>::new(tile_cols);
        #[unroll]
        for j in 0..tile_cols {
            let c = select(col0 + j < cols, col0 + j, cols - 1);
            if stored == Stored::Q8 {
                col_offset[j] = c * scales.stride(1);
            } else if stored == Stored::F16Transposed || stored == Stored::Q8Transposed {
                col_offset[j] = c * values.stride(0);
                scale_offset[j] = c * scales.stride(0);
            } else {
                col_offset[j] = c * weight.stride(1);
            }
        }
        // Packed: the row's words (the last clamped, like the columns) and, int8, the columns' scales in
        // this block.
        let words = values.shape(1);
        let mut scale = Array::<F>::new(tile_cols);

        let mut acc = Array::<F>::new(tile_rows * tile_cols);
        #[unroll]
        for i in 0..tile_rows * tile_cols {
            acc[i] = F::new(0.0);
        }
        let mut w = Array::<F>::new(tile_cols);
        for k in 0..depth {
            if stored == Stored::Q8 {
                if k % Q8_BLOCK == 0 {
                    let s_row = k / Q8_BLOCK * scales.stride(0);
                    #[unroll]
                    for j in 0..tile_cols {
                        scale[j] = scales[s_row + col_offset[j]];
                    }
                }
                let v_row = k * values.stride(0);
                #[unroll]
                for q in 0..tile_cols / 4 {
                    let word = values[v_row + min(col0 / 4 + q, words - 1)];
                    #[unroll]
                    for b in 0..4 {
                        w[4 * q + b] = byte_of::<F>(word, b as u32) * scale[4 * q + b];
                    }
                }
            } else if stored == Stored::F16 {
                let v_row = k * values.stride(0);
                #[unroll]
                for q in 0..tile_cols / 2 {
                    let word = values[v_row + min(col0 / 2 + q, words - 1)];
                    w[2 * q] = half_of::<F>(word, 0);
                    w[2 * q + 1] = half_of::<F>(word, 1);
                }
            } else if stored == Stored::F16Transposed {
                // Each column's word holds this depth and its neighbour.
                #[unroll]
                for j in 0..tile_cols {
                    let word = values[col_offset[j] + k / 2];
                    w[j] = half_of::<F>(word, (k % 2) as u32);
                }
            } else if stored == Stored::Q8Transposed {
                // Each column's word holds this depth and three neighbours.
                if k % Q8_BLOCK == 0 {
                    let block = k / Q8_BLOCK * scales.stride(1);
                    #[unroll]
                    for j in 0..tile_cols {
                        scale[j] = scales[scale_offset[j] + block];
                    }
                }
                #[unroll]
                for j in 0..tile_cols {
                    let word = values[col_offset[j] + k / 4];
                    w[j] = byte_of::<F>(word, (k % 4) as u32) * scale[j];
                }
            } else {
                let w_row = k * weight.stride(0);
                #[unroll]
                for j in 0..tile_cols {
                    w[j] = weight[w_row + col_offset[j]];
                }
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
                        let mut y = acc[i * tile_cols + j];
                        if has_bias {
                            y += bias[col0 + j];
                        }
                        if gelu {
                            y = gelu_erf::<F>(y);
                        }
                        if accumulate {
                            y += output[(row0 + i) * cols + col0 + j];
                        }
                        output[(row0 + i) * cols + col0 + j] = y;
                    }
                }
            }
        }
    }
}
