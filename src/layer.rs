//! One encoder layer: self-attention, then the position-wise feed-forward network
//! (Linear → activation → Linear), each followed by residual + LayerNorm.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, gelu_approximate, relu};
use burn::tensor::{Bool, Device, Tensor};

use crate::add_norm::add_norm;
use crate::attention::BertAttention;
use crate::config::{BertConfig, HiddenAct};
use crate::linear::linear;

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    /// `intermediate.dense`: hidden → intermediate.
    pub intermediate: Linear,
    /// `output.dense`: intermediate → hidden.
    pub output: Linear,
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub hidden_act: HiddenAct,
}

fn activate<const D: usize>(act: HiddenAct, x: Tensor<D>) -> Tensor<D> {
    match act {
        HiddenAct::Gelu => gelu(x),
        HiddenAct::GeluNew => gelu_approximate(x),
        HiddenAct::Relu => relu(x),
    }
}

/// `layer` then `act`; the exact GELU (BERT's default) is fused into the Linear kernel.
pub fn linear_activate<const D: usize>(layer: &Linear, act: HiddenAct, x: Tensor<D>) -> Tensor<D> {
    match act {
        HiddenAct::Gelu => linear(layer, x, true),
        act => activate(act, linear(layer, x, false)),
    }
}

impl BertLayer {
    pub fn init(config: &BertConfig, device: &Device) -> Self {
        Self {
            attention: BertAttention::init(config, device),
            intermediate: LinearConfig::new(config.hidden_size, config.intermediate_size)
                .init(device),
            output: LinearConfig::new(config.intermediate_size, config.hidden_size).init(device),
            layer_norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            layer_norm_eps: config.layer_norm_eps,
            hidden_act: config.hidden_act,
        }
    }

    pub fn forward(&self, hidden: Tensor<3>, mask: Tensor<4, Bool>) -> Tensor<3> {
        self.feed_forward(self.attention.forward(hidden, mask))
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<4, Bool>,
    ) -> (Tensor<3>, Tensor<4>) {
        let (attended, probs) = self.attention.forward_with_probs(hidden, mask);
        (self.feed_forward(attended), probs)
    }

    /// Linear, activation, Linear, then residual + LayerNorm.
    fn feed_forward(&self, attended: Tensor<3>) -> Tensor<3> {
        let inner = linear_activate(&self.intermediate, self.hidden_act, attended.clone());
        let output = linear(&self.output, inner, false);
        add_norm(&self.layer_norm, self.layer_norm_eps, output, attended)
    }
}
