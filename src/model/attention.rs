//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected, added to
//! the residual (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`). Its options: where
//! the LayerNorm sits (after the residual in BERT, before the attention in ModernBERT), rotary positions
//! (ModernBERT) or a relative position bias (MPNet), and a sliding window (ModernBERT's local layers).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};

use crate::model::config::LayerType;
use crate::model::rotary::Rotation;
use crate::ops::add_norm::{dense_add_norm, norm};
use crate::ops::attention::self_attention;
use crate::ops::linear::linear;

/// What every layer's attention reads besides the hidden states, made once per forward pass.
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    /// `[batch, seq]`: 1 for tokens, 0 for padding.
    pub attention_mask: Tensor<2>,
    /// MPNet's relative position bias `[1, heads, seq, seq]`, added to the scores.
    pub position_bias: Option<Tensor<4>>,
    /// ModernBERT's rotations of Q and K: in global layers, in local layers.
    pub rotations: Option<[Rotation; 2]>,
    /// Keys out of a local layer's window, `[1, 1, seq, seq]` (true = out).
    pub outside_window: Option<Tensor<4, Bool>>,
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
    /// path builds the probabilities, one head at a time. With a position bias (MPNet) or a window
    /// (ModernBERT's local layers) the scores are built from burn's ops, the fused kernels taking neither.
    pub fn forward(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        if inputs.position_bias.is_some() || self.layer_type == LayerType::Sliding {
            return self.forward_with_probs(hidden, inputs).0;
        }
        let qkv = self.qkv(hidden.clone(), inputs);
        let context = self_attention(qkv, inputs.attention_mask.clone(), self.num_heads);
        self.output(context, hidden)
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        inputs: &AttentionInputs,
    ) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq, width] = hidden.dims();
        let qkv = self.qkv(hidden.clone(), inputs);
        let [q, k, v] = [0, 1, 2].map(|i| {
            qkv.clone()
                .narrow(2, i * width, width)
                .reshape([batch, seq, self.num_heads, width / self.num_heads])
                .swap_dims(1, 2)
        });
        let head_dim = q.dims()[3];
        // As Hugging Face: masked scores get the most negative float, so softmax gives them 0.
        let mut scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt();
        if let Some(bias) = &inputs.position_bias {
            scores = scores + bias.clone();
        }
        let mut masked = self.padding_mask(inputs.attention_mask.clone());
        if let (LayerType::Sliding, Some(outside)) = (self.layer_type, &inputs.outside_window) {
            masked = masked.bool_or(outside.clone().expand([batch, self.num_heads, seq, seq]));
        }
        let probs = softmax(scores.mask_fill(masked, f32::MIN), 3);
        let context = probs
            .clone()
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, width]);
        (self.output(context, hidden), probs)
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

    /// Which keys each query may not attend to: the padding, `[batch, heads, seq, seq]` (true = masked).
    fn padding_mask(&self, attention_mask: Tensor<2>) -> Tensor<4, Bool> {
        let [batch, seq] = attention_mask.dims();
        attention_mask
            .reshape([batch, 1, 1, seq])
            .expand([batch, self.num_heads, seq, seq])
            .equal_elem(0.0)
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
