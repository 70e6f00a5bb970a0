//! Every Linear layer of the model, `x·W + b` (optionally followed by GELU), as one GPU kernel.
//!
//! Why our own kernel: without autotune (whose candidates fail WGSL validation in Chrome), burn's wgpu
//! backend runs cubecl's general matmul, which stages tiles through workgroup memory behind barriers.
//! Profiled on WebGPU (SwiftShader), its 36 dispatches per MiniLM forward took 3.8 s of 4.4 s. Two
//! shapes ([`KernelShape`]): the `Serial` kernel needs no shared memory and no barrier, each invocation
//! accumulating an 8×8 output tile in registers from `x` rows and `W` columns that its neighbours also
//! read (so caches serve them); the `Tiled` kernel stages tiles of both in workgroup memory, enough
//! workgroups to fill a GPU (see [`plan`]). Both add the bias (and GELU) before their single write. In
//! the browser's CPU path the same job goes to
//! [`super::cpu`]; natively on the CPU and under autodiff the trait's default body composes burn's
//! own ops, so training is unchanged.

use burn::backend::TensorMetadata;
use burn::backend::ops::{FloatTensorOps, QTensorOps};
use burn::backend::tensor::{FloatTensor, QuantizedTensor};
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, FloatDType, Shape, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::{FlexQTensor, FlexTensor};
use cubecl::{CubeCount, CubeDim};

use super::{KernelShape, empty_like, optional, or_absent, placeholder, present, storage};

use super::cpu::q8::{BLOCK as Q8_BLOCK, Q8Matrix};
use super::cpu::{self, Epilogue, Matrix};

/// Rows and columns of output each invocation computes. Measured on SwiftShader at 1×128 (Linear kernels'
/// time per forward): 4×4 1174 ms, 8×4 858, 8×8 602, 16×8 526 (but a single workgroup at 1×16), 16×16 564.
const TILE_ROWS: usize = 8;
const TILE_COLS: usize = 8;
/// Invocations per workgroup.
const WORKGROUP: u32 = 64;

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait LinearBackend: Backend {
    /// `input` `[rows, in]`, `weight` `[in, out]` (any strides), `bias` `[out]` (empty, `[0]`, where the
    /// layer has none: see [`super::or_absent`]) → `[rows, out]`.
    fn linear(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        composed::<Self>(input, weight, present(bias), gelu)
    }

    /// The same with int8 weights (a q8 model): burn's block quantisation, one scale per [`Q8_BLOCK`]
    /// values of a column, as [`q8_scheme`] lays it out. Elsewhere the weight is widened for the call.
    fn q8_linear(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        let weight = Self::dequantize(weight, FloatDType::F32);
        composed::<Self>(input, weight, present(bias), gelu)
    }

    /// `input·weight + bias + residual` (`residual` `[rows, out]`): a pre-norm layer's sublayer output
    /// added to the residual stream. On a GPU the kernel adds it as it writes (one dispatch, not two).
    fn linear_add(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_add(
            <Self as LinearBackend>::linear(input, weight, bias, false),
            residual,
        )
    }

    /// The same with int8 weights.
    fn q8_linear_add(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_add(Self::q8_linear(input, weight, bias, false), residual)
    }
}

/// How a q8 model's Linear weights are held: int8 with an f32 scale per block of [`Q8_BLOCK`] rows of
/// a column (the `in` axis, along which the products are summed). On the CPU one byte per value; on a
/// GPU (`packed`) four neighbouring columns' values in one `u32`, as WebGPU has no 8-bit storage.
pub fn q8_scheme(packed: bool) -> QuantScheme {
    let store = match packed {
        true => QuantStore::PackedU32(0),
        false => QuantStore::Native,
    };
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(store)
        .per_block([Q8_BLOCK as u8, 1], ScaleDtype::F32)
}

/// The same with burn's own ops (autodiff, and shapes or dtypes our kernels do not take).
pub(crate) fn composed<B: Backend>(
    input: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    gelu: bool,
) -> FloatTensor<B> {
    let product = B::float_matmul(input, weight);
    let output = match bias {
        Some(bias) => {
            let out = bias.shape()[0];
            B::float_add(product, B::float_reshape(bias, Shape::new([1, out])))
        }
        None => product,
    };
    if gelu { B::gelu(output) } else { output }
}

/// On the CPU path in the browser, our single-threaded SIMD kernel ([`super::cpu`]); natively
/// flex's gemm runs on all cores.
impl LinearBackend for Flex {
    fn linear(input: FlexTensor, weight: FlexTensor, bias: FlexTensor, gelu: bool) -> FlexTensor {
        let bias = present(bias);
        if cfg!(target_arch = "wasm32")
            && let Some(output) = flex_linear(&input, &weight, bias.as_ref(), gelu)
        {
            return output;
        }
        composed::<Self>(input, weight, bias, gelu)
    }

    fn q8_linear(
        input: FlexTensor,
        weight: FlexQTensor,
        bias: FlexTensor,
        gelu: bool,
    ) -> FlexTensor {
        let bias = present(bias);
        if let Some(output) = flex_q8_linear(&input, &weight, bias.as_ref(), gelu) {
            return output;
        }
        composed::<Self>(input, Self::dequantize(weight, FloatDType::F32), bias, gelu)
    }
}

/// [`cpu::q8::gemm_q8`] when the weight is a contiguous `[in, out]` in the CPU's [`q8_scheme`] and the
/// rest f32;
/// `None` otherwise.
fn flex_q8_linear(
    input: &FlexTensor,
    weight: &FlexQTensor,
    bias: Option<&FlexTensor>,
    gelu: bool,
) -> Option<FlexTensor> {
    let values = weight.tensor();
    if weight.dtype() != DType::QFloat(q8_scheme(false))
        || [Some(input), bias]
            .iter()
            .flatten()
            .any(|t| t.dtype() != DType::F32)
        || !values.layout().is_contiguous()
    {
        return None;
    }
    let ([rows, depth], [_, cols]) = (input.shape().dims(), values.shape().dims());
    let weight = Q8Matrix {
        values: &values.storage::<i8>()[values.layout().start_offset()..],
        scales: weight.scales(),
    };
    on_f32_rows(input, bias, cols, gelu, |input, output, epilogue| {
        cpu::q8::gemm_q8((rows, cols, depth), input, weight, output, cols, epilogue)
    })
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

/// [`cpu::gemm`] when everything is f32 and the weight's rows are contiguous (not the tied
/// decoder's transposed view); `None` otherwise.
fn flex_linear(
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
    let row_stride = layout.strides()[0];
    if cols > 1 && layout.strides()[1] != 1 || row_stride < cols as isize {
        return None;
    }
    let weight = Matrix {
        data: &weight.storage::<f32>()[layout.start_offset()..],
        row_stride: row_stride as usize,
    };
    on_f32_rows(input, bias, cols, gelu, |input, output, epilogue| {
        cpu::gemm((rows, cols, depth), input, weight, output, cols, epilogue)
    })
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
        gpu_linear(input, Weight::of(weight), present(bias), gelu, None)
    }

    fn q8_linear(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        gelu: bool,
    ) -> FloatTensor<Self> {
        // The same `CubeTensor` as a float weight: `Weight::of` reads its dtype.
        Self::linear(input, weight, bias, gelu)
    }

    fn linear_add(
        input: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        gpu_linear(
            input,
            Weight::of(weight),
            present(bias),
            false,
            Some(residual),
        )
    }

    fn q8_linear_add(
        input: FloatTensor<Self>,
        weight: QuantizedTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_add(input, weight, bias, residual)
    }
}

/// A Linear's weight as the GPU kernels read it (made per call and moved into the launch, never kept).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Weight {
    /// `[in, out]`, any strides: a transposed view (the tied MLM decoder) needs no copy.
    F32(CubeTensor),
    /// F16 (an fp16 model), as `[in, out / 2]` words, each two neighbouring columns' halves (the lower
    /// first), so that no adapter needs `shader-f16` to read them. Unpacked in the kernels.
    F16 { values: CubeTensor },
    /// Int8 in the GPU's [`q8_scheme`]: `values` `[in, out / 4]` words, each four neighbouring columns'
    /// bytes (the lowest first); `scales` `[in / Q8_BLOCK, out]`. Unpacked in the kernels.
    Q8 {
        values: CubeTensor,
        scales: CubeTensor,
    },
}

/// How a kernel reads its weight (compile time): f32 through its strides, or packed in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stored {
    F32,
    F16,
    Q8,
}

impl Weight {
    /// `weight` as the kernels read it, never widened into a second, f32 copy: f32, f16 with rows of
    /// whole words, or int8 in the GPU's [`q8_scheme`]; anything else (no model holds it) is widened.
    pub(crate) fn of(weight: CubeTensor) -> Self {
        match weight.dtype {
            DType::F32 => Weight::F32(weight),
            DType::F16 => match halves_as_words(&weight) {
                Some(values) => Weight::F16 { values },
                None => Weight::F32(Cube::float_cast(weight, FloatDType::F32)),
            },
            DType::QFloat(scheme) if scheme == q8_scheme(true) => {
                let (values, scales) = weight
                    .quantized_handles()
                    .expect("a quantised tensor has values and scales");
                Weight::Q8 { values, scales }
            }
            DType::QFloat(_) => Weight::F32(Cube::dequantize(weight, FloatDType::F32)),
            _ => Weight::F32(Cube::float_cast(weight, FloatDType::F32)),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Weight::F32(weight) => weight.meta.shape()[1],
            Weight::F16 { values } => 2 * values.meta.shape()[1],
            Weight::Q8 { scales, .. } => scales.meta.shape()[1],
        }
    }

    /// The kernels' three weight bindings (`weight`, `values`, `scales`), placeholders beside `like`
    /// for those this weight does not have, and how it is stored.
    fn bindings(self, like: &CubeTensor) -> (CubeTensor, CubeTensor, CubeTensor, Stored) {
        // Two-dimensional, as the kernels read the width of `values` whatever the weight.
        let no_values = || empty_like(like, [1, 1], DType::U32);
        match self {
            Weight::F32(weight) => (weight, no_values(), placeholder(like), Stored::F32),
            Weight::F16 { values } => (placeholder(like), values, placeholder(like), Stored::F16),
            Weight::Q8 { values, scales } => (placeholder(like), values, scales, Stored::Q8),
        }
    }
}

/// An f16 `[in, out]` matrix's buffer read as `[in, out / 2]` words, if its rows are contiguous and start
/// on whole words.
fn halves_as_words(weight: &CubeTensor) -> Option<CubeTensor> {
    let [rows, cols] = weight.meta.shape().dims();
    let (row_stride, col_stride) = (weight.meta.strides()[0], weight.meta.strides()[1]);
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

/// What the kernels do as they write a finished product: add the bias (where the layer has one), then
/// GELU (`gelu`), then, where `residual` is given (`[rows, out]`), add it (the kernels write into its
/// buffer and read it back).
pub(crate) struct Finish {
    bias: Option<CubeTensor>,
    gelu: bool,
    residual: Option<CubeTensor>,
}

impl Finish {
    /// The output buffer `[rows, cols]`: the residual's own when no other tensor holds it, else a copy
    /// of it, or a new one; and whether the kernel adds what it holds.
    fn output(&mut self, input: &CubeTensor, rows: usize, cols: usize) -> (CubeTensor, bool) {
        match self.residual.take().map(into_contiguous) {
            Some(residual) if residual.can_mut() => (residual, true),
            Some(residual) => (residual.copy(), true),
            None => (empty_like(input, [rows, cols], input.dtype), false),
        }
    }
}

pub(crate) fn gpu_linear(
    input: CubeTensor,
    weight: Weight,
    bias: Option<CubeTensor>,
    gelu: bool,
    residual: Option<CubeTensor>,
) -> CubeTensor {
    let input = into_contiguous(input);
    let finish = Finish {
        bias,
        gelu,
        residual,
    };
    match KernelShape::of(&input.client) {
        KernelShape::Serial => serial(input, weight, finish),
        KernelShape::Tiled { .. } => tiled_sums(input, weight, Some(finish)).0,
    }
}

fn serial(input: CubeTensor, weight: Weight, mut finish: Finish) -> CubeTensor {
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
    let weight_by_depth = matches!(&weight, Weight::F32(w) if w.meta.strides()[0] == 1 && cols > 1);
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
    tiled_kernel::tiled_linear_kernel::launch(
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

mod tiled_kernel {
    use super::Stored;
    use super::kernel::{f16_weight, gelu_erf, q8_weight};
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

pub(crate) mod kernel {
    use super::{Q8_BLOCK, Stored};
    use cubecl::prelude::*;

    /// Hugging Face's "gelu": x·Φ(x) with the exact erf.
    #[cube]
    pub fn gelu_erf<F: Float>(x: F) -> F {
        x * F::new(0.5) * (F::new(1.0) + (x * F::new(0.70710677)).erf())
    }

    /// The weight's value at depth `k`, column `c`, from its int8 `values` (four columns a word) and block
    /// `scales`.
    #[cube]
    pub fn q8_weight<F: Float>(values: &Tensor<u32>, scales: &Tensor<F>, k: usize, c: usize) -> F {
        let word = values[k * values.stride(0) + c / 4];
        let byte = byte_of::<F>(word, (c % 4) as u32);
        byte * scales[k / Q8_BLOCK * scales.stride(0) + c * scales.stride(1)]
    }

    /// The weight's value at depth `k`, column `c`, from its f16 `values` (two columns a word).
    #[cube]
    pub fn f16_weight<F: Float>(values: &Tensor<u32>, k: usize, c: usize) -> F {
        let word = values[k * values.stride(0) + c / 2];
        half::<F>((word >> (16 * (c % 2)) as u32) & 0xffff)
    }

    /// The f16 whose bits are `h` (its lower 16) as an f32: sign, exponent rebased from 15 to 127 and
    /// mantissa moved up; a subnormal (exponent 0) is its mantissa × 2⁻²⁴. The checkpoints hold no
    /// infinity or NaN (refused at load).
    #[cube]
    fn half<F: Float>(h: u32) -> F {
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
    fn byte_of<F: Float>(word: u32, b: u32) -> F {
        F::cast_from(i32::cast_from(word << (24 - 8 * b)) >> 24)
    }

    /// Each invocation computes a `tile_rows × tile_cols` block of the output over the whole depth, and
    /// adds the bias where `has_bias` (GELU after it, and with `accumulate` what `output` held before it
    /// is written). A packed weight (`weight` unread) is unpacked a word at a time: f16 `values` two
    /// columns a word, int8 `values` four, with `scales` reloaded once per block.
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
        #[unroll]
        for j in 0..tile_cols {
            let c = select(col0 + j < cols, col0 + j, cols - 1);
            if stored == Stored::Q8 {
                col_offset[j] = c * scales.stride(1);
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
                    w[2 * q] = half::<F>(word & 0xffff);
                    w[2 * q + 1] = half::<F>(word >> 16);
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

/// A burn `Linear` (weight `[in, out]`) on `input` `[.., in]`, GELU fused when `gelu`.
pub fn linear<const D: usize>(layer: &Linear, input: Tensor<D>, gelu: bool) -> Tensor<D> {
    let (rows, bias, dims) = flat(layer, input);
    affine(rows, layer.weight.val(), bias, gelu).reshape(dims)
}

/// `residual + layer(input)`, the sum made as the Linear writes its output: a pre-norm layer's residual.
pub fn linear_add<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
    residual: Tensor<D>,
) -> Tensor<D> {
    let device = input.device();
    let (rows, bias, dims) = flat(layer, input);
    let residual = residual
        .reshape([rows.dims()[0], dims[D - 1]])
        .into_dispatch();
    let weight = layer.weight.val();
    let quantized = matches!(weight.dtype(), DType::QFloat(_));
    let (input, weight, bias) = (
        rows.into_dispatch(),
        weight.into_dispatch(),
        or_absent(bias, &device).into_dispatch(),
    );
    Tensor::<2>::from_dispatch(match quantized {
        true => Dispatch::q8_linear_add(input, weight, bias, residual),
        false => Dispatch::linear_add(input, weight, bias, residual),
    })
    .reshape(dims)
}

/// `input` as rows `[.., in]` → `[rows, in]`, the layer's bias (if it has one) and the output's dims.
fn flat<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
) -> (Tensor<2>, Option<Tensor<1>>, [usize; D]) {
    let mut dims = input.dims();
    let [width, out] = layer.weight.dims();
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    let rows = input.reshape([dims[..D - 1].iter().product(), width]);
    dims[D - 1] = out;
    (rows, bias, dims)
}

/// Columns `columns` of a Linear's output only: the weight and bias narrowed as views, so that the
/// other columns are never computed. A packed (f16 or int8) weight computes them all, then keeps those.
pub fn linear_columns<const D: usize>(
    layer: &Linear,
    input: Tensor<D>,
    columns: std::ops::Range<usize>,
) -> Tensor<D> {
    let (start, len) = (columns.start, columns.len());
    let weight = layer.weight.val();
    if weight.dtype() != DType::F32 {
        return linear(layer, input, false).narrow(D - 1, start, len);
    }
    let narrowed = Linear {
        weight: burn::module::Param::from_tensor(weight.narrow(1, start, len)),
        bias: layer
            .bias
            .as_ref()
            .map(|b| burn::module::Param::from_tensor(b.val().narrow(0, start, len))),
    };
    linear(&narrowed, input, false)
}

/// `input·weight + bias` (then GELU when `gelu`): `input` `[rows, in]`, `weight` `[in, out]`, possibly a
/// transposed view, `bias` `[out]` or none.
pub fn affine(
    input: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    gelu: bool,
) -> Tensor<2> {
    let bias = or_absent(bias, &input.device()).into_dispatch();
    let input = input.into_dispatch();
    Tensor::from_dispatch(match weight.dtype() {
        DType::QFloat(_) => Dispatch::q8_linear(input, weight.into_dispatch(), bias, gelu),
        _ => Dispatch::linear(input, weight.into_dispatch(), bias, gelu),
    })
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
        for (gelu, bias) in [(false, Some(&bias)), (true, Some(&bias)), (true, None)] {
            let got = flex_linear(&input, &weight, bias, gelu).expect("row-major f32 weight");
            let want = composed::<Flex>(input.clone(), weight.clone(), bias.cloned(), gelu);
            let diff = cpu::max_abs_diff(got, want);
            assert!(
                diff < 1e-5,
                "gelu={gelu} bias={}: max diff {diff}",
                bias.is_some()
            );
        }
        // A transposed view (the tied decoder) is left to burn's matmul.
        let transposed = tensor([35, 40], 3.0).transpose(0, 1);
        assert!(flex_linear(&input, &transposed, Some(&bias), false).is_none());
    }

    /// The int8 kernel through its flex glue, against burn's own widening of the same quantised tensor:
    /// the scales must be where burn's block layout puts them.
    #[test]
    fn flex_q8_linear_matches_burn_dequantized() {
        let (rows, depth, cols) = (7, 64, 24);
        let input = tensor([rows, depth], 1.0);
        let values: Vec<i8> = (0..depth * cols)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let scales: Vec<f32> = (0..depth / Q8_BLOCK * cols)
            .map(|i| 0.002 + (i % 11) as f32 * 0.001)
            .collect();
        let data = TensorData::quantized(values, [depth, cols], q8_scheme(false), &scales, None);
        let weight = Flex::q_from_data(data, &Default::default());
        let bias = tensor([1, cols], 2.0).reshape(Shape::new([cols]));
        for gelu in [false, true] {
            let got = flex_q8_linear(&input, &weight, Some(&bias), gelu).expect("q8 weight");
            let widened = Flex::dequantize(weight.clone(), FloatDType::F32);
            let want = composed::<Flex>(input.clone(), widened, Some(bias.clone()), gelu);
            let diff = cpu::max_abs_diff(got, want);
            // Only the activations' 16-bit rounding differs: ≤ Σ|w| · max|x| / 32767 / 2 ≈ 2e-4 here.
            assert!(diff < 5e-4, "gelu={gelu}: max diff {diff}");
        }
    }
}
