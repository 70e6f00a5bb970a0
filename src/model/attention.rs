//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected, added to
//! the residual (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`). Its options: where
//! the LayerNorm sits (after the residual in BERT, before the attention in ModernBERT), rotary positions
//! (ModernBERT), a relative position bias (MPNet) or disentangled relative positions (DeBERTa), and a
//! sliding window (ModernBERT's local layers).

use std::cell::Cell;
use std::ops::Range;

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::model::config::LayerType;
use crate::model::disentangled::RelativePositions;
use crate::model::rotary::Rotation;
use crate::ops::add_norm::{dense_add_norm, norm};
use crate::ops::attention::self_attention;
use crate::ops::linear::{linear, linear_columns};

/// Most bytes of the scores a local layer builds at once: its queries go in chunks, each against the keys of
/// its window, so that a long text (ModernBERT reads 8,192 tokens) costs memory in its length, not its square.
/// The same as the pipelines' bound on any one activation.
const LOCAL_SCORES_BYTES: usize = 64 << 20;

thread_local! {
    static FORCED_SCORES_BYTES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with local layers' scores chunked under `bytes` instead of [`LOCAL_SCORES_BYTES`]: the tests
/// compare many small chunks with one.
pub fn with_local_scores_bytes<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    let previous = FORCED_SCORES_BYTES.with(|b| b.replace(Some(bytes)));
    let output = f();
    FORCED_SCORES_BYTES.with(|b| b.set(previous));
    output
}

/// What every layer's attention reads besides the hidden states, made once per forward pass.
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    /// `[batch, seq]`: 1 for tokens, 0 for padding.
    pub attention_mask: Tensor<2>,
    /// MPNet's relative position bias `[1, heads, seq, seq]`, added to the scores.
    pub position_bias: Option<Tensor<4>>,
    /// DeBERTa's relative position embeddings, which each layer projects into c2p and p2c scores.
    pub relative: Option<RelativePositions>,
    /// ModernBERT's rotations of Q and K: in global layers, in local layers.
    pub rotations: Option<[Rotation; 2]>,
    /// How far a local layer's queries see on either side (ModernBERT's `local_attention / 2`).
    pub sliding_window: Option<usize>,
}

impl AttentionInputs {
    fn rotation(&self, layer_type: LayerType) -> Option<&Rotation> {
        let [full, sliding] = self.rotations.as_ref()?;
        Some(match layer_type {
            LayerType::Full => full,
            LayerType::Sliding => sliding,
        })
    }
}

#[derive(Module, Debug)]
pub struct BertAttention {
    /// Hugging Face's `query`, `key` and `value` as one Linear (hidden → 3 × hidden, the three side by
    /// side): one matrix product instead of three. ModernBERT's `Wqkv` is this already.
    pub qkv: Linear,
    /// Output projection of the concatenated heads.
    pub dense: Linear,
    /// Post-norm: of the residual sum. Pre-norm: of the input (ModernBERT's `attn_norm`), none in the first
    /// layer, which reads the embeddings' norm.
    pub layer_norm: Option<LayerNorm>,
    pub num_heads: usize,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub norm_first: bool,
    #[module(skip)]
    pub layer_type: LayerType,
}

impl BertAttention {
    /// `hidden`: `[batch, seq, hidden]` → new hidden states. One fused attention op; only the browser's CPU
    /// path builds the probabilities, one head at a time. With a position bias (MPNet), relative positions
    /// (DeBERTa) or a window (ModernBERT's local layers, in chunks of queries) the scores are built from
    /// burn's ops, the fused kernels taking none of them.
    pub fn forward(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        let qkv = self.qkv(hidden.clone(), inputs);
        let biased = inputs.position_bias.is_some() || inputs.relative.is_some();
        let context = match (self.window(inputs), biased) {
            (Some(window), _) => {
                let heads = self.heads(qkv);
                merge_heads(self.local_attention(&heads, inputs, window))
            }
            (None, true) => {
                let heads = self.heads(qkv);
                let seq = heads[0].dims()[2];
                merge_heads(self.attend(&heads, inputs, 0..seq, 0..seq).0)
            }
            (None, false) => self_attention(qkv, inputs.attention_mask.clone(), self.num_heads),
        };
        self.output(context, hidden)
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        inputs: &AttentionInputs,
    ) -> (Tensor<3>, Tensor<4>) {
        let heads = self.heads(self.qkv(hidden.clone(), inputs));
        let seq = heads[0].dims()[2];
        let (context, probs) = self.attend(&heads, inputs, 0..seq, 0..seq);
        (self.output(merge_heads(context), hidden), probs)
    }

    /// The reach of this layer's window, if it is a local layer.
    fn window(&self, inputs: &AttentionInputs) -> Option<usize> {
        match self.layer_type {
            LayerType::Sliding => inputs.sliding_window,
            LayerType::Full => None,
        }
    }

    /// Q, K and V `[batch, heads, seq, head_dim]` from the projection `[batch, seq, 3 × hidden]`.
    /// The `N` projections side by side in `projected` (Q, K and V, or Q and K), split into heads.
    fn heads<const N: usize>(&self, projected: Tensor<3>) -> [Tensor<4>; N] {
        let [batch, seq, width] = projected.dims();
        let hidden = width / N;
        std::array::from_fn(|i| {
            projected
                .clone()
                .narrow(2, i * hidden, hidden)
                .reshape([batch, seq, self.num_heads, hidden / self.num_heads])
                .swap_dims(1, 2)
        })
    }

    /// softmax(QKᵀ/√d_k + bias + mask)·V by burn's ops, for the queries `queries` over the keys `keys`:
    /// the context `[batch, heads, queries, head_dim]` and the probabilities `[batch, heads, queries, keys]`.
    /// DeBERTa's bias is its c2p and p2c scores, all three terms over √(d_k × terms).
    fn attend(
        &self,
        [q, k, v]: &[Tensor<4>; 3],
        inputs: &AttentionInputs,
        queries: Range<usize>,
        keys: Range<usize>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [batch, heads, _, head_dim] = q.dims();
        let (rows, columns) = (queries.len(), keys.len());
        let q = q.clone().narrow(2, queries.start, rows);
        let [k, v] = [k, v].map(|t| t.clone().narrow(2, keys.start, columns));
        let terms = inputs.relative.as_ref().map_or(1, |r| r.scale_factor);
        let scale = ((head_dim * terms) as f64).sqrt();
        let mut scores = q.clone().matmul(k.clone().swap_dims(2, 3));
        if let Some(relative) = &inputs.relative {
            // The table's queries and keys; its values are never used.
            let positions = linear_columns(
                &self.qkv,
                relative.embeddings.clone(),
                0..2 * heads * head_dim,
            );
            let [pos_q, pos_k] = self.heads(positions);
            let both = [&q, &k];
            if let Some(bias) = relative.scores(both, [pos_q, pos_k], queries.clone(), keys.clone())
            {
                scores = scores + bias;
            }
        }
        scores = scores / scale;
        if let Some(bias) = &inputs.position_bias {
            let bias = bias.clone().narrow(2, queries.start, rows);
            scores = scores + bias.narrow(3, keys.start, columns);
        }
        // As Hugging Face: masked scores get the most negative float, so softmax gives them 0.
        let shape = [batch, heads, rows, columns];
        let mut masked = inputs
            .attention_mask
            .clone()
            .narrow(1, keys.start, columns)
            .reshape([batch, 1, 1, columns])
            .expand(shape)
            .equal_elem(0.0);
        if let Some(window) = self.window(inputs) {
            let outside = outside_window(queries, keys, window, &scores.device());
            masked = masked.bool_or(outside.expand(shape));
        }
        let probs = softmax(scores.mask_fill(masked, f32::MIN), 3);
        (probs.clone().matmul(v), probs)
    }

    /// A local layer's attention in chunks of queries, each over the keys its window reaches, under
    /// [`LOCAL_SCORES_BYTES`] of scores: the same numbers as all queries over all keys, whose scores out of
    /// reach weigh exactly 0. Context `[batch, heads, seq, head_dim]`.
    fn local_attention(
        &self,
        heads: &[Tensor<4>; 3],
        inputs: &AttentionInputs,
        window: usize,
    ) -> Tensor<4> {
        let [batch, num_heads, seq, _] = heads[0].dims();
        let budget = FORCED_SCORES_BYTES
            .with(Cell::get)
            .unwrap_or(LOCAL_SCORES_BYTES);
        let bytes = |chunk: usize| 4 * batch * num_heads * chunk * (chunk + 2 * window).min(seq);
        let mut chunk = seq;
        while chunk > 1 && bytes(chunk) > budget {
            chunk = chunk.div_ceil(2);
        }
        let contexts = (0..seq)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(seq);
                let keys = start.saturating_sub(window)..(end + window).min(seq);
                self.attend(heads, inputs, start..end, keys).0
            })
            .collect();
        Tensor::cat(contexts, 2)
    }

    /// Q, K and V side by side `[batch, seq, 3 × hidden]` from the layer's input (normalised first in
    /// pre-norm), Q and K turned by their positions where the model has rotary ones.
    fn qkv(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        let input = match (&self.layer_norm, self.norm_first) {
            (Some(layer_norm), true) => norm(layer_norm, self.layer_norm_eps, hidden),
            _ => hidden,
        };
        let qkv = linear(&self.qkv, input, false);
        let Some(rotation) = inputs.rotation(self.layer_type) else {
            return qkv;
        };
        let [batch, seq, width] = qkv.dims();
        let hidden = width / 3;
        let head = |i: usize| {
            qkv.clone().narrow(2, i * hidden, hidden).reshape([
                batch,
                seq,
                self.num_heads,
                hidden / self.num_heads,
            ])
        };
        let turned = |i: usize| rotation.apply(head(i)).reshape([batch, seq, hidden]);
        Tensor::cat(
            vec![
                turned(0),
                turned(1),
                qkv.clone().narrow(2, 2 * hidden, hidden),
            ],
            2,
        )
    }

    /// Heads concatenated `[batch, seq, hidden]` → projected and added to the residual; post-norm
    /// normalises the sum.
    fn output(&self, context: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        match (&self.layer_norm, self.norm_first) {
            (Some(layer_norm), false) => dense_add_norm(
                &self.dense,
                layer_norm,
                self.layer_norm_eps,
                context,
                residual,
            ),
            _ => residual + linear(&self.dense, context, false),
        }
    }
}

/// `[batch, heads, seq, head_dim]` → the heads side by side, `[batch, seq, hidden]`.
fn merge_heads(context: Tensor<4>) -> Tensor<3> {
    let [batch, heads, seq, head_dim] = context.dims();
    context
        .swap_dims(1, 2)
        .reshape([batch, seq, heads * head_dim])
}

/// Which of `keys` are out of each of `queries`' reach, `[1, 1, queries, keys]` (true = out): transformers'
/// bidirectional sliding window sees `|query - key| <= window`.
fn outside_window(
    queries: Range<usize>,
    keys: Range<usize>,
    window: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let shape = [1, 1, queries.len(), keys.len()];
    let outside: Vec<bool> = queries
        .flat_map(|query| keys.clone().map(move |key| query.abs_diff(key) > window))
        .collect();
    Tensor::from_data(TensorData::new(outside, shape), device)
}
