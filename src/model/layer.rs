//! One encoder layer: self-attention, then the position-wise feed-forward network
//! (Linear → activation → Linear), each followed by residual + LayerNorm.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, relu};

use crate::model::attention::BertAttention;
use crate::model::config::HiddenAct;
use crate::ops::add_norm::dense_add_norm;
use crate::ops::linear::linear;

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
    /// `attention_mask` `[batch, seq]`: 1 for tokens, 0 for padding; `position_bias` added to the
    /// scores (MPNet).
    pub fn forward(
        &self,
        hidden: Tensor<3>,
        attention_mask: Tensor<2>,
        position_bias: Option<Tensor<4>>,
    ) -> Tensor<3> {
        self.feed_forward(
            self.attention
                .forward(hidden, attention_mask, position_bias),
        )
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        attention_mask: Tensor<2>,
        position_bias: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let (attended, probs) =
            self.attention
                .forward_with_probs(hidden, attention_mask, position_bias);
        (self.feed_forward(attended), probs)
    }

    /// Linear, activation, Linear, then residual + LayerNorm.
    fn feed_forward(&self, attended: Tensor<3>) -> Tensor<3> {
        let inner = linear_activate(&self.intermediate, self.hidden_act, attended.clone());
        dense_add_norm(
            &self.output,
            &self.layer_norm,
            self.layer_norm_eps,
            inner,
            attended,
        )
    }
}
