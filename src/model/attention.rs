//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected, added to
//! the residual (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`). Its options: where
//! the LayerNorm sits (after the residual in BERT, before the attention in ModernBERT), rotary positions
//! (ModernBERT), a relative position bias (MPNet) or disentangled relative positions (DeBERTa), and a
//! sliding window (ModernBERT's local layers).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::model::config::LayerType;
use crate::model::disentangled::RelativePositions;
use crate::model::rotary::Rotation;
use crate::ops::add_norm::{dense_add_norm, norm};
use crate::ops::attention::{Scores, self_attention};
use crate::ops::linear::{linear, linear_add, linear_columns};

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
    /// `hidden`: `[batch, seq, hidden]` → new hidden states, through one fused attention op (with MPNet's
    /// bias or DeBERTa's c2p and p2c scores, built first, and ModernBERT's window).
    pub fn forward(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        let qkv = self.qkv(hidden.clone(), inputs);
        let bias = self.bias(&qkv, inputs);
        let scores = self.scores(&qkv, inputs);
        let mask = inputs.attention_mask.clone();
        let context = self_attention(qkv, mask, bias, self.num_heads, scores);
        self.output(context, hidden)
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`, from burn's ops.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        inputs: &AttentionInputs,
    ) -> (Tensor<3>, Tensor<4>) {
        let qkv = self.qkv(hidden.clone(), inputs);
        let (context, probs) = self.attend(qkv, inputs);
        (self.output(merge_heads(context), hidden), probs)
    }

    /// How this layer's scores are scaled and which keys each query reaches: DeBERTa divides by
    /// √(d_k × terms), a local layer sees its window.
    fn scores(&self, qkv: &Tensor<3>, inputs: &AttentionInputs) -> Scores {
        let head_dim = qkv.dims()[2] / 3 / self.num_heads;
        let terms = inputs.relative.as_ref().map_or(1, |r| r.scale_factor);
        Scores {
            scale: 1.0 / ((head_dim * terms) as f32).sqrt(),
            scale_bias: inputs.relative.is_some(),
            window: self.window(inputs),
        }
    }

    /// What this layer adds to its scores, `[1 | batch, heads, seq, seq]`: MPNet's position bias, or
    /// DeBERTa's c2p and p2c scores (not yet scaled).
    fn bias(&self, qkv: &Tensor<3>, inputs: &AttentionInputs) -> Option<Tensor<4>> {
        if let Some(bias) = &inputs.position_bias {
            return Some(bias.clone());
        }
        let relative = inputs.relative.as_ref()?;
        // The table's queries and keys; its values are never used.
        let positions = linear_columns(
            &self.qkv,
            relative.embeddings.clone(),
            0..qkv.dims()[2] / 3 * 2,
        );
        relative.scores(qkv.clone(), positions, self.num_heads)
    }

    /// The reach of this layer's window, if it is a local layer.
    fn window(&self, inputs: &AttentionInputs) -> Option<usize> {
        match self.layer_type {
            LayerType::Sliding => inputs.sliding_window,
            LayerType::Full => None,
        }
    }

    /// The `N` projections side by side in `projected` `[batch, seq, N × hidden]` (Q, K and V), each
    /// split into heads, `[batch, heads, seq, head_dim]`.
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

    /// softmax(QKᵀ/√d_k + bias + mask)·V by burn's ops, from the projection `[batch, seq, 3 × hidden]`:
    /// the context `[batch, heads, seq, head_dim]` and the probabilities `[batch, heads, seq, seq]`.
    fn attend(&self, qkv: Tensor<3>, inputs: &AttentionInputs) -> (Tensor<4>, Tensor<4>) {
        let bias = self.bias(&qkv, inputs);
        let scores = self.scores(&qkv, inputs);
        let [q, k, v] = self.heads(qkv);
        let [batch, heads, seq, _] = q.dims();
        let mut logits = q.matmul(k.swap_dims(2, 3));
        if let (Some(bias), true) = (&bias, scores.scale_bias) {
            logits = logits + bias.clone();
        }
        logits = logits * scores.scale;
        if let (Some(bias), false) = (bias, scores.scale_bias) {
            logits = logits + bias;
        }
        // As Hugging Face: masked scores get the most negative float, so softmax gives them 0.
        let shape = [batch, heads, seq, seq];
        let mut masked = inputs
            .attention_mask
            .clone()
            .reshape([batch, 1, 1, seq])
            .expand(shape)
            .equal_elem(0.0);
        if let Some(outside) = scores.outside(0..seq, 0..seq) {
            let outside = TensorData::new(outside, [1, 1, seq, seq]);
            let outside = Tensor::<4, Bool>::from_data(outside, &logits.device());
            masked = masked.bool_or(outside.expand(shape));
        }
        let probs = softmax(logits.mask_fill(masked, f32::MIN), 3);
        (probs.clone().matmul(v), probs)
    }

    /// Q, K and V side by side `[batch, seq, 3 × hidden]` from the layer's input (normalised first in
    /// pre-norm), Q and K turned by their positions where the model has rotary ones.
    fn qkv(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        let input = match (&self.layer_norm, self.norm_first) {
            (Some(layer_norm), true) => norm(layer_norm, self.layer_norm_eps, hidden),
            _ => hidden,
        };
        let qkv = linear(&self.qkv, input, false);
        match inputs.rotation(self.layer_type) {
            Some(rotation) => rotation.apply(qkv, self.num_heads),
            None => qkv,
        }
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
            _ => linear_add(&self.dense, context, residual),
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
