//! The `Tiled` shape, for real GPUs: tiles of the input and the weight staged in workgroup memory,
//! register blocking, and the depth split ([`plan`]) until enough workgroups run to fill the device.

use burn_cubecl::tensor::CubeTensor;
use cubecl::{CubeCount, CubeDim};

use super::{Finish, Weight};
use crate::ops::{empty_like, optional, placeholder, storage};

/// A workgroup's block of the output, `rows × cols`, built `depth` input columns at a time; each unit
/// computes `unit_rows × unit_cols` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub rows: usize,
    pub cols: usize,
    pub depth: usize,
    pub unit_rows: usize,
    pub unit_cols: usize,
}

impl Tile {
    fn units(self) -> usize {
        (self.rows / self.unit_rows) * (self.cols / self.unit_cols)
    }
}

/// How one product is laid out on a GPU: the tile, and into how many slices the depth is split (their
/// partial sums are added by the kernel that reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tile: Tile,
    pub splits: usize,
}

/// Candidate tiles, all of 256 units and 16 deep per step, largest first. Deeper steps (32, 64) were
/// measured slower on an H100 at every shape of MiniLM's products.
pub const TILES: [Tile; 3] = [
    Tile {
        rows: 64,
        cols: 64,
        depth: 16,
        unit_rows: 4,
        unit_cols: 4,
    },
    Tile {
        rows: 32,
        cols: 64,
        depth: 16,
        unit_rows: 2,
        unit_cols: 4,
    },
    Tile {
        rows: 16,
        cols: 64,
        depth: 16,
        unit_rows: 1,
        unit_cols: 4,
    },
];
/// The tile for products of at least [`LARGE_ROWS`] rows, natively: 8 × 8 outputs per unit read
/// workgroup memory half as often per multiply-add as 4 × 4. On an H100 (native tile sweep, 2026-11-24)
/// it ran QKV and the feed-forward 1.1–1.6× faster than 64 × 64 at 4,096 and 8,192 rows; in Chrome on
/// the same GPU it made embedding 64 texts of 128 tokens 2.5–3.5× slower, so WebAssembly builds keep 64 × 64.
pub const LARGE_TILE: Tile = Tile {
    rows: 128,
    cols: 128,
    depth: 8,
    unit_rows: 8,
    unit_cols: 8,
};
pub const LARGE_ROWS: usize = 4096;

/// Tiles that [`plan`] does not choose, which the native bench's tile sweep (`BENCH_TILES=1`) measures
/// beside the others. 128 × 128 × 16 fills WebGPU's minimum 16 KiB of workgroup memory exactly.
pub const TRIAL_TILES: [Tile; 2] = [
    Tile {
        rows: 128,
        cols: 64,
        depth: 16,
        unit_rows: 8,
        unit_cols: 4,
    },
    Tile {
        rows: 128,
        cols: 128,
        depth: 16,
        unit_rows: 8,
        unit_cols: 8,
    },
];
/// Workgroups a product should launch, its depth split in slices until it does: each workgroup's
/// steps wait on memory one after another, so a GPU needs many of them in flight. Measured on an H100
/// at MiniLM's shapes (16 to 8,192 rows): targets 256, 384, 512 and 768 came within 2.2%, 1.6%, 2.5%
/// and 2.4% of the best tile and split per shape (summed), 384 closest.
const TARGET_WORKGROUPS: usize = 384;
const MAX_SPLITS: usize = 16;

thread_local! {
    static FORCED_PLAN: std::cell::Cell<Option<Plan>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with every tiled product launched from this thread laid out as `plan` (the kernel bench
/// measures the candidates with it).
pub fn with_plan<T>(plan: Plan, f: impl FnOnce() -> T) -> T {
    let previous = FORCED_PLAN.with(|p| p.replace(Some(plan)));
    let output = f();
    FORCED_PLAN.with(|p| p.set(previous));
    output
}

/// The smallest tile that holds the rows (64 rows above 32; natively [`LARGE_TILE`] from [`LARGE_ROWS`]),
/// the depth split in two, four, … (each slice at least one step deep) until [`TARGET_WORKGROUPS`] run.
pub fn plan(rows: usize, cols: usize, depth: usize) -> Plan {
    if let Some(plan) = FORCED_PLAN.with(std::cell::Cell::get) {
        return plan;
    }
    let tile = if rows >= LARGE_ROWS && cfg!(not(target_arch = "wasm32")) {
        LARGE_TILE
    } else {
        *TILES
            .iter()
            .rev()
            .find(|t| t.rows >= rows)
            .unwrap_or(&TILES[0])
    };
    let workgroups = rows.div_ceil(tile.rows) * cols.div_ceil(tile.cols);
    let mut splits = 1;
    while splits < MAX_SPLITS
        && workgroups * splits < TARGET_WORKGROUPS
        && depth.div_ceil(2 * splits) >= tile.depth
    {
        splits *= 2;
    }
    Plan { tile, splits }
}

/// `input·weight` by the tiled kernel. With a [`Finish`] (bias, GELU, residual), in one slice, finished:
/// `[rows, cols]`. Without, laid out by [`plan`]: `[splits, rows, cols]`, one partial sum per slice of
/// the depth, and the number of slices, for a kernel that reads them anyway (the norm after BERT's
/// output projections) to add up with the bias. A split elsewhere would cost a second dispatch, which in
/// a browser costs more CPU time (~55 µs) than the split saves on the GPU.
pub(crate) fn tiled_sums(
    input: CubeTensor,
    weight: Weight,
    finish: Option<Finish>,
) -> (CubeTensor, usize) {
    let [rows, depth] = input.meta.shape().dims();
    let cols = weight.cols();
    let finished = finish.is_some();
    let Plan { tile, splits } = match plan(rows, cols, depth) {
        plan if finished => Plan { splits: 1, ..plan },
        plan => plan,
    };
    // Each split covers whole tile steps.
    let split_depth = depth.div_ceil(splits).div_ceil(tile.depth) * tile.depth;
    let splits = depth.div_ceil(split_depth);
    // A weight stored with its depth contiguous (the tied decoder's transposed view) is read along it.
    let weight_by_depth = match &weight {
        Weight::F32(w) => w.meta.strides()[0] == 1 && cols > 1,
        Weight::F16Transposed { .. } | Weight::Q8Transposed { .. } => true,
        Weight::F16 { .. } | Weight::Q8 { .. } => false,
    };
    let dtype = input.dtype;
    let (output, bias, has_bias, gelu, accumulate) = match finish {
        Some(mut finish) => {
            let (output, accumulate) = finish.output(&input, rows, cols);
            let (bias, has_bias) = optional(finish.bias, &output);
            (output, bias, has_bias, finish.gelu, accumulate)
        }
        None => {
            let output = empty_like(&input, [splits, rows, cols], dtype);
            let unused = placeholder(&output);
            (output, unused, false, false, false)
        }
    };
    let (weight, values, scales, stored) = weight.bindings(&output);
    kernel::tiled_linear_kernel::launch(
        &output.client,
        CubeCount::Static(
            cols.div_ceil(tile.cols) as u32,
            rows.div_ceil(tile.rows) as u32,
            splits as u32,
        ),
        CubeDim::new_1d(tile.units() as u32),
        input.into_tensor_arg(),
        weight.into_tensor_arg(),
        values.into_tensor_arg(),
        scales.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        split_depth,
        tile.rows,
        tile.cols,
        tile.depth,
        tile.unit_rows,
        tile.unit_cols,
        weight_by_depth,
        stored,
        finished,
        has_bias,
        gelu,
        accumulate,
        storage(dtype),
    );
    (output, splits)
}

mod kernel {
    use crate::ops::linear::kernel::gelu_erf;
    use crate::ops::linear::weight::Stored;
    use crate::ops::linear::weight::unpack::{
        f16_weight, f16_weight_transposed, q8_weight, q8_weight_transposed,
    };
    use cubecl::prelude::*;

    /// One workgroup computes a `tile_rows × tile_cols` block of `input·weight` over one depth slice.
    /// Each step stages a `tile_rows × tile_depth` block of the input and a `tile_depth × tile_cols`
    /// block of the weight in workgroup memory (the next step's blocks are already being read into
    /// registers while this one is multiplied); each unit accumulates `unit_rows × unit_cols` outputs,
    /// strided across the tile so that neighbouring units read neighbouring words. With one slice the
    /// bias (where `has_bias`; then GELU, and what `output` holds where `accumulate`) are added here;
    /// otherwise the partial sums go to `output[slice]`. A packed weight (f16 in `values`, or int8 in
    /// `values` and `scales`; `weight` unread) is unpacked as its block is read.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn tiled_linear_kernel<F: Float>(
        input: &Tensor<F>,
        weight: &Tensor<F>,
        values: &Tensor<u32>,
        scales: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        split_depth: usize,
        #[comptime] tile_rows: usize,
        #[comptime] tile_cols: usize,
        #[comptime] tile_depth: usize,
        #[comptime] unit_rows: usize,
        #[comptime] unit_cols: usize,
        #[comptime] weight_by_depth: bool,
        #[comptime] stored: Stored,
        #[comptime] epilogue: bool,
        #[comptime] has_bias: bool,
        #[comptime] gelu: bool,
        #[comptime] accumulate: bool,
        #[define(F)] _dtype: ElemType,
    ) {
        let rows = input.shape(0);
        let depth = input.shape(1);
        let cols = output.shape(output.rank() - 1);
        let units = (tile_rows / unit_rows) * (tile_cols / unit_cols);
        let input_loads = tile_rows * tile_depth / units;
        let weight_loads = tile_depth * tile_cols / units;

        let unit = UNIT_POS as usize;
        let unit_col = unit % (tile_cols / unit_cols);
        let unit_row = unit / (tile_cols / unit_cols);
        let row0 = CUBE_POS_Y as usize * tile_rows;
        let col0 = CUBE_POS_X as usize * tile_cols;
        let slice = CUBE_POS_Z as usize;
        let k_begin = slice * split_depth;
        let k_end = min(k_begin + split_depth, depth);

        let mut input_tile = Shared::<[F]>::new_slice(tile_depth * tile_rows);
        let mut weight_tile = Shared::<[F]>::new_slice(tile_depth * tile_cols);
        let mut input_next = Array::<F>::new(input_loads);
        let mut weight_next = Array::<F>::new(weight_loads);
        let mut acc = Array::<F>::new(unit_rows * unit_cols);
        #[unroll]
        for i in 0..unit_rows * unit_cols {
            acc[i] = F::new(0.0);
        }

        let mut k0 = k_begin;
        read_step(
            input,
            weight,
            values,
            scales,
            &mut input_next,
            &mut weight_next,
            row0,
            col0,
            cols,
            k0,
            k_end,
            tile_rows,
            tile_cols,
            tile_depth,
            units,
            weight_by_depth,
            stored,
        );

        while k0 < k_end {
            #[unroll]
            for s in 0..input_loads {
                let e = unit + s * units;
                input_tile[(e % tile_depth) * tile_rows + e / tile_depth] = input_next[s];
            }
            #[unroll]
            for s in 0..weight_loads {
                let e = unit + s * units;
                let k = weight_depth_index(e, tile_depth, tile_cols, weight_by_depth);
                let c = weight_col_index(e, tile_depth, tile_cols, weight_by_depth);
                weight_tile[k * tile_cols + c] = weight_next[s];
            }
            sync_cube();

            let next = k0 + tile_depth;
            if next < k_end {
                read_step(
                    input,
                    weight,
                    values,
                    scales,
                    &mut input_next,
                    &mut weight_next,
                    row0,
                    col0,
                    cols,
                    next,
                    k_end,
                    tile_rows,
                    tile_cols,
                    tile_depth,
                    units,
                    weight_by_depth,
                    stored,
                );
            }

            let mut a = Array::<F>::new(unit_rows);
            let mut b = Array::<F>::new(unit_cols);
            #[unroll]
            for kk in 0..tile_depth {
                #[unroll]
                for i in 0..unit_rows {
                    a[i] = input_tile[kk * tile_rows + unit_row + i * (tile_rows / unit_rows)];
                }
                #[unroll]
                for j in 0..unit_cols {
                    b[j] = weight_tile[kk * tile_cols + unit_col + j * (tile_cols / unit_cols)];
                }
                #[unroll]
                for i in 0..unit_rows {
                    #[unroll]
                    for j in 0..unit_cols {
                        acc[i * unit_cols + j] += a[i] * b[j];
                    }
                }
            }
            sync_cube();
            k0 = next;
        }

        let base = slice * rows * cols;
        #[unroll]
        for i in 0..unit_rows {
            let r = row0 + unit_row + i * (tile_rows / unit_rows);
            #[unroll]
            for j in 0..unit_cols {
                let c = col0 + unit_col + j * (tile_cols / unit_cols);
                if r < rows && c < cols {
                    let mut y = acc[i * unit_cols + j];
                    if epilogue {
                        if has_bias {
                            y += bias[c];
                        }
                        if gelu {
                            y = gelu_erf::<F>(y);
                        }
                        if accumulate {
                            y += output[r * cols + c];
                        }
                    }
                    output[base + r * cols + c] = y;
                }
            }
        }
    }

    /// Reads the input block (rows `row0..`, depth `k0..`) and the weight block (depth `k0..`, columns
    /// `col0..` of `cols`) of one step into registers, each unit its share. Out-of-range elements read a
    /// clamped (valid) address and become zero.
    #[cube]
    #[allow(clippy::too_many_arguments)]
    fn read_step<F: Float>(
        input: &Tensor<F>,
        weight: &Tensor<F>,
        values: &Tensor<u32>,
        scales: &Tensor<F>,
        input_next: &mut Array<F>,
        weight_next: &mut Array<F>,
        row0: usize,
        col0: usize,
        cols: usize,
        k0: usize,
        k_end: usize,
        #[comptime] tile_rows: usize,
        #[comptime] tile_cols: usize,
        #[comptime] tile_depth: usize,
        #[comptime] units: usize,
        #[comptime] weight_by_depth: bool,
        #[comptime] stored: Stored,
    ) {
        let rows = input.shape(0);
        let depth = input.shape(1);
        let unit = UNIT_POS as usize;
        #[unroll]
        for s in 0..tile_rows * tile_depth / units {
            let e = unit + s * units;
            let r = row0 + e / tile_depth;
            let k = k0 + e % tile_depth;
            let x = input[min(r, rows - 1) * depth + min(k, depth - 1)];
            input_next[s] = select(r < rows && k < k_end, x, F::new(0.0));
        }
        #[unroll]
        for s in 0..tile_depth * tile_cols / units {
            let e = unit + s * units;
            let k = k0 + weight_depth_index(e, tile_depth, tile_cols, weight_by_depth);
            let c = col0 + weight_col_index(e, tile_depth, tile_cols, weight_by_depth);
            let (k_in, c_in) = (min(k, depth - 1), min(c, cols - 1));
            let w = if stored == Stored::Q8 {
                q8_weight::<F>(values, scales, k_in, c_in)
            } else if stored == Stored::F16 {
                f16_weight::<F>(values, k_in, c_in)
            } else if stored == Stored::F16Transposed {
                f16_weight_transposed::<F>(values, k_in, c_in)
            } else if stored == Stored::Q8Transposed {
                q8_weight_transposed::<F>(values, scales, k_in, c_in)
            } else {
                weight[k_in * weight.stride(0) + c_in * weight.stride(1)]
            };
            weight_next[s] = select(k < k_end && c < cols, w, F::new(0.0));
        }
    }

    /// Which element of the weight block the `e`-th load of a workgroup reads: consecutive loads walk
    /// along whichever axis the weight stores contiguously, so that neighbouring units read
    /// neighbouring words.
    #[cube]
    fn weight_depth_index(
        e: usize,
        #[comptime] tile_depth: usize,
        #[comptime] tile_cols: usize,
        #[comptime] by_depth: bool,
    ) -> usize {
        if by_depth {
            e % tile_depth
        } else {
            e / tile_cols
        }
    }

    #[cube]
    fn weight_col_index(
        e: usize,
        #[comptime] tile_depth: usize,
        #[comptime] tile_cols: usize,
        #[comptime] by_depth: bool,
    ) -> usize {
        if by_depth {
            e / tile_depth
        } else {
            e % tile_cols
        }
    }
}
