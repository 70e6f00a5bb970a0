//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected,
//! then residual + LayerNorm (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};

use crate::ops::add_norm::dense_add_norm;
use crate::ops::attention::self_attention;
use crate::ops::linear::linear;

#[derive(Module, Debug)]
pub struct BertAttention {
    /// Hugging Face's `query`, `key` and `value` as one Linear (hidden → 3 × hidden, the three side by
    /// side): one matrix product instead of three.
    pub qkv: Linear,
    /// Output projection of the concatenated heads.
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub num_heads: usize,
    pub layer_norm_eps: f64,
}

impl BertAttention {
    /// `hidden`: `[batch, seq, hidden]`, `attention_mask` `[batch, seq]` (1 for tokens, 0 for padding) →
    /// new hidden states. One fused attention op; only the browser's CPU path builds the probabilities,
    /// one head at a time. With a `position_bias` (MPNet's, `[1, heads, seq, seq]`) the scores are built
    /// from burn's ops, the fused kernels taking none.
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        attention_mask: Tensor<2>,
        position_bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        if position_bias.is_some() {
            return self
                .forward_with_probs(hidden, attention_mask, position_bias)
                .0;
        }
        let qkv = linear(&self.qkv, hidden.clone(), false);
        self.output(self_attention(qkv, attention_mask, self.num_heads), hidden)
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        attention_mask: Tensor<2>,
        position_bias: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq, width] = hidden.dims();
        let qkv = linear(&self.qkv, hidden.clone(), false);
        let [q, k, v] = [0, 1, 2].map(|i| {
            qkv.clone()
                .narrow(2, i * width, width)
                .reshape([batch, seq, self.num_heads, width / self.num_heads])
                .swap_dims(1, 2)
        });
        let head_dim = q.dims()[3];
        // As Hugging Face: masked scores get the most negative float, so softmax gives them 0.
        let mut scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt();
        if let Some(bias) = position_bias {
            scores = scores + bias;
        }
        let scores = scores.mask_fill(self.padding_mask(attention_mask), f32::MIN);
        let probs = softmax(scores, 3);
        let context = probs
            .clone()
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, width]);
        (self.output(context, hidden), probs)
    }

    /// Which keys each query may not attend to: the padding, `[batch, heads, seq, seq]` (true = masked).
    fn padding_mask(&self, attention_mask: Tensor<2>) -> Tensor<4, Bool> {
        let [batch, seq] = attention_mask.dims();
        attention_mask
            .reshape([batch, 1, 1, seq])
            .expand([batch, self.num_heads, seq, seq])
            .equal_elem(0.0)
    }

    /// Heads concatenated `[batch, seq, hidden]` → projected, residual + LayerNorm.
    fn output(&self, context: Tensor<3>, hidden: Tensor<3>) -> Tensor<3> {
        dense_add_norm(
            &self.dense,
            &self.layer_norm,
            self.layer_norm_eps,
            context,
            hidden,
        )
    }
}
