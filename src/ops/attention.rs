//! softmax(QKᵀ/√d_k + mask)·V for all heads, reading Q, K, V as the fused projection wrote them
//! (`[batch, seq, 3 × hidden]`: Q, K, V side by side, each with the heads side by side) and writing the
//! heads already concatenated, so no head split or merge is ever copied.
//!
//! Why our own: burn's cube backend has no fused attention without autotune; its fallback (two matmuls,
//! a softmax, head split/merge copies) was the largest cost left on WebGPU after the Linear kernel.
//! Two GPU shapes ([`KernelShape`]):
//! - `Serial` (CPU-backed adapters): each invocation owns four query rows of one head and runs an online
//!   softmax over all keys, no barrier; neighbouring invocations read the same K and V rows.
//! - `Tiled` (GPUs, heads a multiple of 4 wide): one workgroup per (item, head, block of queries);
//!   blocks of K and V rows are staged in workgroup memory four words to an access, each unit keeps one
//!   query's online softmax over a quarter of each block, and the quarters are merged at the end.
//!
//! The browser's CPU path runs [`cpu::self_attention`]; native flex and autodiff keep burn's `attention`
//! op, and so does the GPU for heads wider than [`MAX_HEAD_DIM`] (whose per-unit registers would not fit).

use std::cell::Cell;
use std::ops::Range;

use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings,
};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Shape, Slice, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_flex::FlexTensor;
use cubecl::{CubeCount, CubeDim};

use super::{KernelShape, cpu, empty_like, optional, or_absent, present, storage, workgroup_bytes};

/// Widest head our kernels take: each unit keeps a query row and its context in registers.
pub const MAX_HEAD_DIM: usize = 128;

const WORKGROUP: u32 = 64;
/// Query rows per invocation (`Serial`): each K and V row loaded serves all of them. Attention time per
/// 1×512 forward on SwiftShader: 1 row 1550 ms, 2 1701, 4 1183, 8 876, 16 742; but the unrolled kernel's
/// compile time counts in the cold start (WebGPU, page load to first result: 4 rows 3.8 s, 8 rows 6.4 s).
const QUERY_ROWS: usize = 4;

/// `Tiled`: queries per workgroup, and the units that share each query's keys.
const QUERY_BLOCK: usize = 32;
const KEY_GROUPS: usize = 4;
/// `Tiled`: keys staged in workgroup memory per step.
const KEY_BLOCK: usize = 64;

/// What a layer's scores hold besides QKᵀ and the padding: BERT's are `QKᵀ/√d_k`; MPNet adds a position
/// bias after the scale, DeBERTa its c2p and p2c scores before it (and a larger divisor), ModernBERT's local
/// layers see only the keys within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// What QKᵀ is multiplied by.
    pub scale: f32,
    /// Whether the bias is multiplied by `scale` with QKᵀ (DeBERTa) or added after (MPNet).
    pub scale_bias: bool,
    /// Keys further than this from their query weigh nothing (ModernBERT's `local_attention / 2`).
    pub window: Option<usize>,
}

impl Scores {
    /// BERT's: `QKᵀ/√d_k` over every key.
    pub fn plain(head_dim: usize) -> Self {
        Scores {
            scale: 1.0 / (head_dim as f32).sqrt(),
            scale_bias: false,
            window: None,
        }
    }

    /// The keys that queries `queries` reach out of `0..seq`.
    pub fn keys(&self, queries: &Range<usize>, seq: usize) -> Range<usize> {
        match self.window {
            Some(window) => queries.start.saturating_sub(window)..(queries.end + window).min(seq),
            None => 0..seq,
        }
    }

    /// For each query of `queries` (rows) and key of `keys`, whether the key is out of its reach, where
    /// there is a window: transformers' bidirectional sliding window sees `|query − key| ≤ window`.
    pub fn outside(&self, queries: Range<usize>, keys: Range<usize>) -> Option<Vec<bool>> {
        let window = self.window?;
        let rows = queries.map(|query| keys.clone().map(move |key| query.abs_diff(key) > window));
        Some(rows.flatten().collect())
    }
}

/// Most bytes of scores that burn's ops build at once for a windowed layer: its queries go in chunks, each
/// against the keys its window reaches, so that a long text (ModernBERT reads 8,192 tokens) costs memory in
/// its length, not its square. The same as the pipelines' bound on any one activation.
const WINDOW_SCORES_BYTES: usize = 64 << 20;

thread_local! {
    static FORCED_SCORES_BYTES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with windowed layers' scores chunked under `bytes` instead of [`WINDOW_SCORES_BYTES`] where
/// burn's ops compute them: the tests compare many small chunks with one.
pub fn with_window_scores_bytes<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    let previous = FORCED_SCORES_BYTES.with(|b| b.replace(Some(bytes)));
    let output = f();
    FORCED_SCORES_BYTES.with(|b| b.set(previous));
    output
}

#[backend_extension(Cube, Flex, Autodiff: cfg(not(target_arch = "wasm32")))]
pub trait AttentionBackend: Backend {
    /// `qkv` `[batch, seq, 3 × hidden]`; `attention_mask` `[batch, seq]`, 1 for tokens and 0 for padding;
    /// `bias` `[1 | batch, heads, seq, seq]` added to the scores, or empty (BERT's: see
    /// [`super::or_absent`]) → context `[batch, seq, hidden]`.
    fn self_attention(
        qkv: FloatTensor<Self>,
        attention_mask: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        num_heads: usize,
        scores: Scores,
    ) -> FloatTensor<Self> {
        composed::<Self>(qkv, attention_mask, present(bias), num_heads, scores)
    }
}

/// The same with burn's own ops: split Q, K, V and the heads, burn's `attention` with Hugging Face's
/// padding mask (a windowed layer's queries in chunks, each over the keys it reaches), merge the heads.
fn composed<B: Backend>(
    qkv: FloatTensor<B>,
    attention_mask: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    num_heads: usize,
    scores: Scores,
) -> FloatTensor<B> {
    let [batch, seq, width] = qkv.shape().dims();
    let hidden = width / 3;
    let part = |i: usize| {
        let x = B::float_slice(
            qkv.clone(),
            &[
                Slice::full(),
                Slice::full(),
                Slice::from(i * hidden..(i + 1) * hidden),
            ],
        );
        let x = B::float_reshape(x, Shape::new([batch, seq, num_heads, hidden / num_heads]));
        B::float_swap_dims(x, 1, 2)
    };
    let [q, k, v] = [0, 1, 2].map(part);
    let bias = match scores.scale_bias {
        true => bias.map(|bias| B::float_mul_scalar(bias, scores.scale.into())),
        false => bias,
    };
    let device = attention_mask.device();
    let bool_dtype = get_or_init_device_settings::<B>(&device).bool_dtype;
    let options = AttentionModuleOptions {
        scale: Some(scores.scale.into()),
        ..Default::default()
    };
    let chunk = match scores.window {
        Some(window) => {
            let budget = FORCED_SCORES_BYTES
                .with(Cell::get)
                .unwrap_or(WINDOW_SCORES_BYTES);
            let bytes =
                |chunk: usize| 4 * batch * num_heads * chunk * (chunk + 2 * window).min(seq);
            let mut chunk = seq;
            while chunk > 1 && bytes(chunk) > budget {
                chunk = chunk.div_ceil(2);
            }
            chunk
        }
        None => seq,
    };
    let span = |x: &FloatTensor<B>, dim: usize, range: &Range<usize>| {
        let mut slices = [Slice::full(), Slice::full(), Slice::full(), Slice::full()];
        slices[dim] = Slice::from(range.clone());
        B::float_slice(x.clone(), &slices)
    };
    let contexts = (0..seq)
        .step_by(chunk.max(1))
        .map(|start| {
            let queries = start..(start + chunk).min(seq);
            let keys = scores.keys(&queries, seq);
            let shape = Shape::new([batch, num_heads, queries.len(), keys.len()]);
            let padding = B::float_slice(
                attention_mask.clone(),
                &[Slice::full(), Slice::from(keys.clone())],
            );
            let padding = B::float_reshape(padding, Shape::new([batch, 1, 1, keys.len()]));
            let mut masked = B::float_equal_elem(
                B::float_expand(padding, shape.clone()),
                0.0.into(),
                bool_dtype,
            );
            if let Some(outside) = scores.outside(queries.clone(), keys.clone()) {
                let outside: Vec<f32> = outside.into_iter().map(|o| o as u8 as f32).collect();
                let outside = B::float_from_data(
                    TensorData::new(outside, [1, 1, queries.len(), keys.len()]),
                    &device,
                );
                let outside = B::float_equal_elem(outside, 1.0.into(), bool_dtype);
                masked = B::bool_or(masked, B::bool_expand(outside, shape.clone()));
            }
            let bias = bias.as_ref().map(|bias| {
                let bias = span(&span(bias, 2, &queries), 3, &keys);
                let [items, ..] = bias.shape().dims::<4>();
                match items == batch {
                    true => bias,
                    false => B::float_expand(bias, shape.clone()),
                }
            });
            B::attention(
                span(&q, 2, &queries),
                span(&k, 2, &keys),
                span(&v, 2, &keys),
                Some(masked),
                bias,
                options,
            )
        })
        .collect();
    let context = B::float_cat(contexts, 2);
    B::float_reshape(
        B::float_swap_dims(context, 1, 2),
        Shape::new([batch, seq, hidden]),
    )
}

/// On the CPU path in the browser, [`cpu::self_attention`]: per head two SIMD products and a
/// vectorised softmax, where burn's naive attention spent most of its time in scalar `exp`. Natively
/// flex's own attention runs on all cores and is faster (MiniLM 1×512 on 2 cores: 222 ms against 331).
impl AttentionBackend for Flex {
    fn self_attention(
        qkv: FlexTensor,
        attention_mask: FlexTensor,
        bias: FlexTensor,
        num_heads: usize,
        scores: Scores,
    ) -> FlexTensor {
        let bias = present(bias);
        if cfg!(target_arch = "wasm32")
            && let Some(context) =
                flex_self_attention(&qkv, &attention_mask, bias.as_ref(), num_heads, scores)
        {
            return context;
        }
        composed::<Flex>(qkv, attention_mask, bias, num_heads, scores)
    }
}

/// `None` unless the inputs are f32 (the only dtype the model computes in).
fn flex_self_attention(
    qkv: &FlexTensor,
    attention_mask: &FlexTensor,
    bias: Option<&FlexTensor>,
    num_heads: usize,
    scores: Scores,
) -> Option<FlexTensor> {
    if [Some(qkv), Some(attention_mask), bias]
        .iter()
        .flatten()
        .any(|t| t.dtype() != DType::F32)
    {
        return None;
    }
    let [batch, seq, width] = qkv.shape().dims();
    let [qkv, attention_mask] = [qkv, attention_mask].map(FlexTensor::to_contiguous);
    let bias = bias.map(FlexTensor::to_contiguous);
    let bias = match &bias {
        Some(bias) => Some(bias.as_slice::<f32>()?),
        None => None,
    };
    let context = cpu::self_attention(
        (batch, seq, width / 3),
        num_heads,
        qkv.as_slice::<f32>()?,
        attention_mask.as_slice::<f32>()?,
        bias,
        scores,
    );
    Some(FlexTensor::from_data(TensorData::new(
        context,
        [batch, seq, width / 3],
    )))
}

#[cfg(not(target_arch = "wasm32"))]
impl<B: AttentionBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    AttentionBackend for burn::backend::Autodiff<B, C>
{
}

impl AttentionBackend for Cube {
    fn self_attention(
        qkv: CubeTensor,
        attention_mask: CubeTensor,
        bias: CubeTensor,
        num_heads: usize,
        scores: Scores,
    ) -> CubeTensor {
        cube_attention(qkv, attention_mask, present(bias), num_heads, scores)
    }
}

fn cube_attention(
    qkv: CubeTensor,
    attention_mask: CubeTensor,
    bias: Option<CubeTensor>,
    num_heads: usize,
    scores: Scores,
) -> CubeTensor {
    let [_, _, width] = qkv.meta.shape().dims();
    let head_dim = width / 3 / num_heads;
    if head_dim > MAX_HEAD_DIM {
        return composed::<Cube>(qkv, attention_mask, bias, num_heads, scores);
    }
    let [qkv, attention_mask] = [qkv, attention_mask].map(into_contiguous);
    let (bias, has_bias) = optional(bias, &qkv);
    let args = Arguments {
        num_heads,
        has_bias,
        scale: scores.scale,
        bias_scale: if scores.scale_bias { scores.scale } else { 1.0 },
        // Without a window every key is within `seq` of every query.
        window: scores.window.unwrap_or(usize::MAX),
    };
    match KernelShape::of(&qkv.client) {
        KernelShape::Tiled { .. } if head_dim.is_multiple_of(4) => {
            tiled(qkv, attention_mask, bias, args)
        }
        _ => serial(qkv, attention_mask, bias, args),
    }
}

/// What both kernel shapes take besides their tensors.
struct Arguments {
    num_heads: usize,
    has_bias: bool,
    scale: f32,
    bias_scale: f32,
    window: usize,
}

fn serial(
    qkv: CubeTensor,
    attention_mask: CubeTensor,
    bias: CubeTensor,
    args: Arguments,
) -> CubeTensor {
    let [batch, seq, width] = qkv.meta.shape().dims();
    let hidden = width / 3;
    let output = empty_like(&qkv, [batch, seq, hidden], qkv.dtype);
    let invocations = (batch * args.num_heads * seq.div_ceil(QUERY_ROWS)) as u32;
    kernel::attention_kernel::launch(
        &output.client,
        CubeCount::Static(invocations.div_ceil(WORKGROUP), 1, 1),
        CubeDim::new_1d(WORKGROUP),
        qkv.into_tensor_arg(),
        attention_mask.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        args.num_heads,
        args.scale,
        args.bias_scale,
        args.window.min(seq),
        args.has_bias,
        hidden / args.num_heads,
        QUERY_ROWS,
        storage(output.dtype),
    );
    output
}

fn tiled(
    qkv: CubeTensor,
    attention_mask: CubeTensor,
    bias: CubeTensor,
    args: Arguments,
) -> CubeTensor {
    let [batch, seq, width] = qkv.meta.shape().dims();
    let hidden = width / 3;
    let head_dim = hidden / args.num_heads;
    let limit = qkv.client.properties().hardware.max_shared_memory_size;
    let element = qkv.dtype.size();
    let Some((query_block, key_block)) = tiled_blocks(head_dim, args.has_bias, element, limit)
    else {
        return serial(qkv, attention_mask, bias, args);
    };
    let output = empty_like(&qkv, [batch, seq, hidden], qkv.dtype);
    tiled_kernel::tiled_attention_kernel::launch(
        &output.client,
        CubeCount::Static(
            seq.div_ceil(query_block) as u32,
            args.num_heads as u32,
            batch as u32,
        ),
        CubeDim::new_1d((query_block * KEY_GROUPS) as u32),
        qkv.into_tensor_arg(),
        attention_mask.into_tensor_arg(),
        bias.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        args.scale,
        args.bias_scale,
        args.window.min(seq),
        args.has_bias,
        head_dim,
        query_block,
        key_block,
        KEY_GROUPS,
        storage(output.dtype),
    );
    output
}

/// `Tiled`: the most queries, then keys, per block whose workgroup memory ([`tiled_shared`]) fits the
/// device's `limit`.
/// Browsers and lavapipe allow 32 KiB, where a 64-wide head's 32 queries would need 34 to merge.
fn tiled_blocks(
    head_dim: usize,
    has_bias: bool,
    element: usize,
    limit: usize,
) -> Option<(usize, usize)> {
    let needs = |query_block: usize, key_block: usize| {
        let [words, keep, bias] =
            tiled_shared(query_block, key_block, KEY_GROUPS, head_dim / 4, has_bias);
        workgroup_bytes(element, &[4 * words, keep, bias])
    };
    [QUERY_BLOCK, QUERY_BLOCK / 2, QUERY_BLOCK / 4]
        .into_iter()
        .flat_map(|query_block| [KEY_BLOCK, KEY_BLOCK / 2, KEY_BLOCK / 4].map(|k| (query_block, k)))
        // Each key of a block has a unit to stage its mask.
        .filter(|&(query_block, key_block)| key_block <= query_block * KEY_GROUPS)
        .find(|&(query_block, key_block)| needs(query_block, key_block) <= limit)
}

mod kernel {
    use cubecl::prelude::*;

    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn attention_kernel<F: Float>(
        qkv: &Tensor<F>,
        attention_mask: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        num_heads: usize,
        scale: f32,
        bias_scale: f32,
        window: usize,
        #[comptime] has_bias: bool,
        #[comptime] head_dim: usize,
        #[comptime] query_rows: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = output.shape(1);
        let hidden = output.shape(2);
        let width = qkv.shape(2);
        let query_tiles = seq.div_ceil(query_rows);
        let pos = ABSOLUTE_POS;
        if pos >= output.shape(0) * num_heads * query_tiles {
            terminate!();
        }
        // Invocations of one (batch, head) are adjacent, so they share K and V rows in cache.
        let i0 = pos % query_tiles * query_rows;
        let head = pos / query_tiles % num_heads;
        let b = pos / query_tiles / num_heads;
        let column = head * head_dim;

        // Rows past the end (last tile) repeat the last query and are not written.
        let scale = F::cast_from(scale);
        let bias_scale = F::cast_from(bias_scale);
        // This head's bias rows, of this item or of the one item that all share.
        let bias_head = ((b % bias.shape(0)) * num_heads + head) * seq * seq;
        let mut q = Array::<F>::new(query_rows * head_dim);
        let mut context = Array::<F>::new(query_rows * head_dim);
        #[unroll]
        for r in 0..query_rows {
            let row = (b * seq + select(i0 + r < seq, i0 + r, seq - 1)) * width + column;
            #[unroll]
            for d in 0..head_dim {
                q[r * head_dim + d] = qkv[row + d] * scale;
                context[r * head_dim + d] = F::new(0.0);
            }
        }

        // Online softmax: per query a running maximum and denominator, the context rescaled as the
        // maximum grows. A padded key's weight is exactly 0, as with Hugging Face's additive f32::MIN mask,
        // and so is that of a key out of a query's window.
        let mut row_max = Array::<F>::new(query_rows);
        let mut sum = Array::<F>::new(query_rows);
        let mut score = Array::<F>::new(query_rows);
        let mut rescale = Array::<F>::new(query_rows);
        #[unroll]
        for r in 0..query_rows {
            row_max[r] = F::min_value();
            sum[r] = F::new(0.0);
        }
        // Only the keys that some of these queries reach.
        let first = max(i0, window) - window;
        let last = min(seq, i0 + query_rows + window);
        for j in first..last {
            if attention_mask[b * seq + j] != F::new(0.0) {
                let key_row = (b * seq + j) * width + hidden + column;
                let value_row = key_row + hidden;
                #[unroll]
                for r in 0..query_rows {
                    score[r] = F::new(0.0);
                }
                #[unroll]
                for d in 0..head_dim {
                    let k = qkv[key_row + d];
                    #[unroll]
                    for r in 0..query_rows {
                        score[r] += q[r * head_dim + d] * k;
                    }
                }
                #[unroll]
                for r in 0..query_rows {
                    let i = min(i0 + r, seq - 1);
                    let reach = max(i, j) - min(i, j) <= window;
                    let mut s = score[r];
                    if has_bias {
                        s += bias[bias_head + i * seq + j] * bias_scale;
                    }
                    let new_max = select(reach, F::max(row_max[r], s), row_max[r]);
                    rescale[r] = (row_max[r] - new_max).exp();
                    // Now this key's weight.
                    score[r] = select(reach, (s - new_max).exp(), F::new(0.0));
                    sum[r] = sum[r] * rescale[r] + score[r];
                    row_max[r] = new_max;
                }
                #[unroll]
                for d in 0..head_dim {
                    let v = qkv[value_row + d];
                    #[unroll]
                    for r in 0..query_rows {
                        let c = r * head_dim + d;
                        context[c] = context[c] * rescale[r] + score[r] * v;
                    }
                }
            }
        }
        #[unroll]
        for r in 0..query_rows {
            if i0 + r < seq {
                // A query that reaches no token (padding beyond a window) gets zeros, as in burn.
                let reached = sum[r] > F::new(0.0);
                let row = (b * seq + i0 + r) * hidden + column;
                #[unroll]
                for d in 0..head_dim {
                    let c = context[r * head_dim + d];
                    output[row + d] = select(reached, c / sum[r], F::new(0.0));
                }
            }
        }
    }
}

/// The tiled kernel's workgroup variables, in elements, as it declares them: words of 4 used twice (the K
/// and V rows of a block of keys while the keys are walked, then each group's softmax state
/// `[max, sum, _, _]` and context for the merge), the staged keys' mask, and the block's bias (one
/// element where there is none).
fn tiled_shared(
    query_block: usize,
    key_block: usize,
    key_groups: usize,
    lanes: usize,
    has_bias: bool,
) -> [usize; 3] {
    let staged = 2 * key_block * lanes;
    let merged = query_block * key_groups * (lanes + 1);
    let bias = if has_bias { query_block * key_block } else { 1 };
    [staged.max(merged), key_block, bias]
}

mod tiled_kernel {
    use cubecl::prelude::*;

    /// Four consecutive words, the unit of workgroup memory here: in Chrome every workgroup-memory
    /// access is bounds-clamped, and a clamp per word cost the kernel ~3× its time (H100, 1×512).
    type Word4<F> = Vector<F, Const<4>>;

    #[cube]
    fn read4<F: Float>(tensor: &Tensor<F>, at: usize) -> Word4<F> {
        let mut v = Word4::<F>::empty();
        #[unroll]
        for c in 0..4 {
            v.insert(c, tensor[at + c]);
        }
        v
    }

    #[cube]
    fn sum4<F: Float>(v: Word4<F>) -> F {
        v.extract(0usize) + v.extract(1usize) + v.extract(2usize) + v.extract(3usize)
    }

    /// Whether key `key` (`keep`: 1 for a token, 0 for padding or past the end) counts for query `query`.
    #[cube]
    fn weighs<F: Float>(keep: F, query: usize, key: usize, window: usize) -> bool {
        // `select`, not `&&`: a branch per key here leaves SwiftShader compiling for minutes.
        select(
            max(query, key) - min(query, key) <= window,
            keep,
            F::new(0.0),
        ) != F::new(0.0)
    }

    /// One workgroup: item `CUBE_POS_Z`, head `CUBE_POS_Y`, queries `CUBE_POS_X × query_block ..`.
    /// Unit `u` owns query `u % query_block` and, of each staged block of keys, those congruent to
    /// `u / query_block` modulo `key_groups`; at the end the groups' softmax states are merged.
    /// `head_dim` is a multiple of 4.
    #[cube(launch)]
    #[allow(clippy::too_many_arguments)]
    pub fn tiled_attention_kernel<F: Float>(
        qkv: &Tensor<F>,
        attention_mask: &Tensor<F>,
        bias: &Tensor<F>,
        output: &mut Tensor<F>,
        scale: f32,
        bias_scale: f32,
        window: usize,
        #[comptime] has_bias: bool,
        #[comptime] head_dim: usize,
        #[comptime] query_block: usize,
        #[comptime] key_block: usize,
        #[comptime] key_groups: usize,
        #[define(F)] _dtype: ElemType,
    ) {
        let seq = output.shape(1);
        let hidden = output.shape(2);
        let width = qkv.shape(2);
        let units = query_block * key_groups;
        let keys_per_unit = key_block / key_groups;
        let lanes = comptime!(head_dim / 4); // words of 4 per head row
        let unit = UNIT_POS as usize;
        let qi = unit % query_block;
        let group = unit / query_block;
        let b = CUBE_POS_Z as usize;
        let head = CUBE_POS_Y as usize;
        let column = head * head_dim;
        let i0 = CUBE_POS_X as usize * query_block;
        let i = i0 + qi;
        // This head's bias rows, of this item or of the one item that all share.
        let bias_head = ((b % bias.shape(0)) * CUBE_COUNT_Y as usize + head) * seq * seq;
        let bias_scale = F::cast_from(bias_scale);
        // Only the keys that some of the block's queries reach.
        let mut j0 = max(i0, window) - window;
        let last = min(seq, i0 + query_block + window);

        // Workgroup memory, as `tiled_blocks` fitted it to the device.
        let sizes = comptime!(crate::ops::attention::tiled_shared(
            query_block,
            key_block,
            key_groups,
            lanes,
            has_bias
        ));
        let mut shared = Shared::<[Word4<F>]>::new_slice(comptime!(sizes[0]));
        let mut keep = Shared::<[F]>::new_slice(comptime!(sizes[1]));
        // The bias of the block's queries and staged keys, scaled.
        let mut block_bias = Shared::<[F]>::new_slice(comptime!(sizes[2]));

        // A query past the end computes on the last row and is not written.
        let row = (b * seq + min(i, seq - 1)) * width + column;
        let scale = Word4::<F>::new(F::cast_from(scale));
        let mut q = Array::<Word4<F>>::new(lanes);
        let mut context = Array::<Word4<F>>::new(lanes);
        #[unroll]
        for l in 0..lanes {
            q[l] = read4(qkv, row + 4 * l) * scale;
            context[l] = Word4::<F>::new(F::new(0.0));
        }
        let mut max = F::min_value();
        let mut sum = F::new(0.0);
        let mut score = Array::<F>::new(keys_per_unit);

        while j0 < last {
            // Stage K and V rows j0.. (each a contiguous run of head_dim words) and their mask.
            #[unroll]
            for s in 0..(2 * key_block * lanes).div_ceil(units) {
                let e = unit + s * units;
                if e < 2 * key_block * lanes {
                    let part = e / (key_block * lanes); // 0: K, 1: V
                    let j = e % (key_block * lanes) / lanes;
                    let key = min(j0 + j, seq - 1);
                    shared[e] = read4(
                        qkv,
                        (b * seq + key) * width + (part + 1) * hidden + column + 4 * (e % lanes),
                    );
                }
            }
            if unit < key_block {
                let key = j0 + unit;
                let token = attention_mask[b * seq + min(key, seq - 1)];
                keep[unit] = select(key < seq, token, F::new(0.0));
            }
            if has_bias {
                #[unroll]
                for s in 0..(query_block * key_block).div_ceil(units) {
                    let e = unit + s * units;
                    if e < query_block * key_block {
                        let query = min(i0 + e / key_block, seq - 1);
                        let key = min(j0 + e % key_block, seq - 1);
                        block_bias[e] = bias[bias_head + query * seq + key] * bias_scale;
                    }
                }
            }
            sync_cube();

            // Scores of this unit's keys, then one rescale of the context for the block.
            let mut block_max = F::min_value();
            #[unroll]
            for t in 0..keys_per_unit {
                let j = group + t * key_groups;
                let mut s = Word4::<F>::new(F::new(0.0));
                #[unroll]
                for l in 0..lanes {
                    s += q[l] * shared[j * lanes + l];
                }
                let mut s = sum4(s);
                if has_bias {
                    s += block_bias[qi * key_block + j];
                }
                score[t] = select(weighs::<F>(keep[j], i, j0 + j, window), s, F::min_value());
                block_max = F::max(block_max, score[t]);
            }
            let new_max = F::max(max, block_max);
            let rescale = (max - new_max).exp();
            sum *= rescale;
            #[unroll]
            for l in 0..lanes {
                context[l] *= Word4::<F>::new(rescale);
            }
            #[unroll]
            for t in 0..keys_per_unit {
                let j = group + t * key_groups;
                // A padded key weighs exactly 0, as with Hugging Face's additive f32::MIN mask, and so
                // does a key out of the query's window.
                let p = select(
                    weighs::<F>(keep[j], i, j0 + j, window),
                    (score[t] - new_max).exp(),
                    F::new(0.0),
                );
                sum += p;
                let weight = Word4::<F>::new(p);
                #[unroll]
                for l in 0..lanes {
                    context[l] += weight * shared[(key_block + j) * lanes + l];
                }
            }
            max = new_max;
            sync_cube();
            j0 += key_block;
        }

        // Merge the groups' states of each query; group 0 writes.
        let state = unit * (lanes + 1);
        let mut head = Word4::<F>::new(F::new(0.0));
        head.insert(0usize, max);
        head.insert(1usize, sum);
        shared[state] = head;
        #[unroll]
        for l in 0..lanes {
            shared[state + 1 + l] = context[l];
        }
        sync_cube();
        if group == 0 && i < seq {
            let mut total_max = F::min_value();
            #[unroll]
            for g in 0..key_groups {
                total_max = F::max(
                    total_max,
                    shared[(g * query_block + qi) * (lanes + 1)].extract(0usize),
                );
            }
            let mut total = F::new(0.0);
            #[unroll]
            for l in 0..lanes {
                context[l] = Word4::<F>::new(F::new(0.0));
            }
            #[unroll]
            for g in 0..key_groups {
                let at = (g * query_block + qi) * (lanes + 1);
                let state = shared[at];
                let weight = (state.extract(0usize) - total_max).exp();
                total += state.extract(1usize) * weight;
                let weight = Word4::<F>::new(weight);
                #[unroll]
                for l in 0..lanes {
                    context[l] += shared[at + 1 + l] * weight;
                }
            }
            // A query that reaches no token (padding beyond a window) gets zeros, as in burn.
            let reached = total > F::new(0.0);
            let out = (b * seq + i) * hidden + column;
            #[unroll]
            for l in 0..lanes {
                #[unroll]
                for c in 0..4 {
                    output[out + 4 * l + c] =
                        select(reached, context[l].extract(c) / total, F::new(0.0));
                }
            }
        }
    }
}

/// `qkv` `[batch, seq, 3 × hidden]`, `attention_mask` `[batch, seq]`, `bias` `[1 | batch, heads, seq,
/// seq]` → context `[batch, seq, hidden]`, heads concatenated.
pub fn self_attention(
    qkv: Tensor<3>,
    attention_mask: Tensor<2>,
    bias: Option<Tensor<4>>,
    num_heads: usize,
    scores: Scores,
) -> Tensor<3> {
    let bias = or_absent(bias, &qkv.device());
    Tensor::from_dispatch(Dispatch::self_attention(
        qkv.into_dispatch(),
        attention_mask.into_dispatch(),
        bias.into_dispatch(),
        num_heads,
        scores,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the 32 KiB of workgroup memory that browsers and lavapipe allow, every head width the tiled
    /// kernel takes finds blocks: MiniLM's as measured on the H100, a 64-wide head at half the queries and
    /// keys (all of them with NVIDIA's 48 KiB), a 128-wide at a quarter.
    #[test]
    fn tiled_blocks_fit_the_workgroup_memory() {
        for head_dim in (4..=MAX_HEAD_DIM).step_by(4) {
            for has_bias in [false, true] {
                assert!(
                    tiled_blocks(head_dim, has_bias, 4, 32 << 10).is_some(),
                    "{head_dim}"
                );
            }
        }
        assert_eq!(tiled_blocks(32, true, 4, 32 << 10), Some((32, 64)));
        assert_eq!(tiled_blocks(64, true, 4, 32 << 10), Some((16, 32)));
        assert_eq!(tiled_blocks(64, true, 4, 48 << 10), Some((32, 64)));
        assert_eq!(tiled_blocks(128, false, 4, 32 << 10), Some((8, 16)));
        assert_eq!(tiled_blocks(128, false, 4, 16 << 10), None);
    }

    /// The browser's CPU attention through its flex glue, against burn's `attention` on the same
    /// tensors: plain, with a bias after and before the scale (shared by the items, and per item), and
    /// with a window (burn's ops in chunks of queries).
    #[test]
    fn flex_self_attention_matches_burn_ops() {
        let (batch, seq, hidden, heads) = (2, 9, 16, 4);
        let values = |n: usize, step: f32| {
            (0..n)
                .map(|i| (i as f32 * step + 1.0).sin())
                .collect::<Vec<f32>>()
        };
        let qkv = || {
            let values = values(batch * seq * 3 * hidden, 0.61);
            FlexTensor::from_data(TensorData::new(values, [batch, seq, 3 * hidden]))
        };
        // The second item's last three keys are padding.
        let tokens = (0..batch * seq).map(|i| if i >= 2 * seq - 3 { 0.0f32 } else { 1.0 });
        let attention_mask =
            FlexTensor::from_data(TensorData::new(tokens.collect::<Vec<f32>>(), [batch, seq]));
        let bias = |items: usize| {
            let values = values(items * heads * seq * seq, 0.37);
            FlexTensor::from_data(TensorData::new(values, [items, heads, seq, seq]))
        };
        let plain = Scores::plain(hidden / heads);
        let cases = [
            (None, plain),
            (Some(bias(1)), plain),
            (
                Some(bias(batch)),
                Scores {
                    scale: 0.3,
                    scale_bias: true,
                    window: None,
                },
            ),
            (
                None,
                Scores {
                    window: Some(2),
                    ..plain
                },
            ),
        ];
        for (bias, scores) in cases {
            let got = flex_self_attention(&qkv(), &attention_mask, bias.as_ref(), heads, scores)
                .expect("f32 inputs");
            // Windowed: three queries (over at most seven keys) at a time.
            let want = with_window_scores_bytes(4 * batch * heads * 3 * 7, || {
                composed::<Flex>(qkv(), attention_mask.clone(), bias.clone(), heads, scores)
            });
            let diff = cpu::max_abs_diff(got, want);
            assert!(
                diff < 1e-5,
                "{scores:?}, bias {}: max diff {diff}",
                bias.is_some()
            );
        }
    }
}
