//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected,
//! then residual + LayerNorm (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};

use crate::add_norm::add_norm;
use crate::config::BertConfig;
use crate::fused_attention::self_attention;
use crate::linear::linear;

#[derive(Module, Debug)]
pub struct BertAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    /// Output projection of the concatenated heads.
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub num_heads: usize,
    pub layer_norm_eps: f64,
}

impl BertAttention {
    pub fn init(config: &BertConfig, device: &Device) -> Self {
        let linear = || LinearConfig::new(config.hidden_size, config.hidden_size).init(device);
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            dense: linear(),
            layer_norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            num_heads: config.num_attention_heads,
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    /// Which keys each query may not attend to: the padding, `[batch, heads, seq, seq]` (true = masked), from
    /// `attention_mask` `[batch, seq]` (1 for tokens, 0 for padding). Compared after the broadcast, so the
    /// mask is one contiguous tensor made once per forward, not a view each layer's kernel copies again.
    pub fn padding_mask(&self, attention_mask: Tensor<2>) -> Tensor<4, Bool> {
        let [batch, seq] = attention_mask.dims();
        attention_mask
            .reshape([batch, 1, 1, seq])
            .expand([batch, self.num_heads, seq, seq])
            .equal_elem(0.0)
    }

    /// `hidden`: `[batch, seq, hidden]` → new hidden states. One fused attention op: the probabilities
    /// are never materialised (flex's fused kernel on the CPU, ours on the GPU).
    pub fn forward(&self, hidden: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        let [q, k, v] = self.project(hidden.clone());
        self.output(self_attention(q, k, v, mask, self.num_heads), hidden)
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
    ) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq, width] = hidden.dims();
        let [q, k, v] = self.project(hidden.clone()).map(|x| {
            x.reshape([batch, seq, self.num_heads, width / self.num_heads])
                .swap_dims(1, 2)
        });
        let head_dim = q.dims()[3];
        // As Hugging Face: masked scores get the most negative float, so softmax gives them 0.
        let scores =
            (q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt()).mask_fill(mask, f32::MIN);
        let probs = softmax(scores, 3);
        let context = probs
            .clone()
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, width]);
        (self.output(context, hidden), probs)
    }

    /// Q, K, V `[batch, seq, hidden]`, heads side by side.
    fn project(&self, hidden: Tensor<3>) -> [Tensor<3>; 3] {
        [&self.query, &self.key, &self.value].map(|layer| linear(layer, hidden.clone(), false))
    }

    /// Heads concatenated `[batch, seq, hidden]` → projected, residual + LayerNorm.
    fn output(&self, context: Tensor<3>, hidden: Tensor<3>) -> Tensor<3> {
        let projected = linear(&self.dense, context, false);
        add_norm(&self.layer_norm, self.layer_norm_eps, projected, hidden)
    }
}
