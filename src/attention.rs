//! Multi-head self-attention: softmax(QKᵀ/√d_k + mask)·V per head, heads concatenated, projected,
//! then residual + LayerNorm (Hugging Face's `BertAttention` = `BertSelfAttention` + `BertSelfOutput`).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use crate::config::BertConfig;

#[derive(Module, Debug)]
pub struct BertAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    /// Output projection of the concatenated heads.
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub num_heads: usize,
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
        }
    }

    /// `hidden`: `[batch, seq, hidden]`; `mask`: additive, `[batch, 1, 1, seq]` (0 for tokens, very
    /// negative for padding). Returns the new hidden states and the attention probabilities
    /// `[batch, heads, seq, seq]`.
    pub fn forward(&self, hidden: Tensor<3>, mask: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq, width] = hidden.dims();
        let head_dim = width / self.num_heads;
        let heads = |x: Tensor<3>| {
            x.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };

        let q = heads(self.query.forward(hidden.clone()));
        let k = heads(self.key.forward(hidden.clone()));
        let v = heads(self.value.forward(hidden.clone()));

        let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt() + mask;
        let probs = softmax(scores, 3);
        let context = probs
            .clone()
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, width]);

        (
            self.layer_norm
                .forward(self.dense.forward(context) + hidden),
            probs,
        )
    }
}
