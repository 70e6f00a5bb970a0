//! softmax(QKᵀ/√d_k + mask)·V for all heads, reading Q, K, V as the fused projection wrote them
//! (`[batch, seq, 3 × hidden]`: Q, K, V side by side, each with the heads side by side) and writing the
//! heads already concatenated, so no head split or merge is ever copied.
//!
//! Why our own: burn's cube backend has no fused attention without autotune; its fallback (two matmuls,
//! a softmax, head split/merge copies) was the largest cost left on WebGPU after the Linear kernel.
//! Two GPU shapes ([`KernelShape`]):
//! - [`serial`] (CPU-backed adapters): each invocation owns four query rows of one head and runs an online
//!   softmax over all keys, no barrier; neighbouring invocations read the same K and V rows.
//! - [`tiled`] (GPUs, heads a multiple of 4 wide): one workgroup per (item, head, block of queries);
//!   blocks of K and V rows are staged in workgroup memory four words to an access, each unit keeps one
//!   query's online softmax over a quarter of each block, and the quarters are merged at the end.
//!
//! The browser's CPU path runs [`cpu::self_attention`]; native flex and autodiff keep burn's `attention`
//! op, and so does the GPU for heads wider than [`MAX_HEAD_DIM`] (whose per-unit registers would not fit).

mod serial;
mod tiled;

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

use super::{KernelShape, cpu, optional, or_absent, present};

/// Widest head our kernels take: each unit keeps a query row and its context in registers.
pub const MAX_HEAD_DIM: usize = 128;

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
            tiled::tiled(qkv, attention_mask, bias, args)
        }
        _ => serial::serial(qkv, attention_mask, bias, args),
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
