//! One encoder layer: self-attention, then the position-wise feed-forward network (Linear → activation →
//! Linear), each with a residual and a LayerNorm: after the residual (post-norm, BERT) or before the block
//! (pre-norm, ModernBERT). ModernBERT's feed-forward is gated (GeGLU: act(input) · gate).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, relu};

use crate::model::attention::{AttentionInputs, BertAttention};
use crate::model::config::HiddenAct;
use crate::ops::add_norm::{dense_add_norm, norm};
use crate::ops::geglu::geglu;
use crate::ops::linear::{linear, linear_add};

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    /// `intermediate.dense` (hidden → intermediate); ModernBERT's `mlp.Wi` (hidden → 2 × intermediate: input
    /// and gate side by side).
    pub intermediate: Linear,
    /// `output.dense`: intermediate → hidden.
    pub output: Linear,
    /// Post-norm: of the residual sum (`output.LayerNorm`). Pre-norm: of the feed-forward's input
    /// (ModernBERT's `mlp_norm`).
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub hidden_act: HiddenAct,
    #[module(skip)]
    pub norm_first: bool,
    #[module(skip)]
    pub gated: bool,
}

pub fn activate<const D: usize>(act: HiddenAct, x: Tensor<D>) -> Tensor<D> {
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
    pub fn forward(&self, hidden: Tensor<3>, inputs: &AttentionInputs) -> Tensor<3> {
        self.feed_forward(self.attention.forward(hidden, inputs))
    }

    /// As `forward`, and also the attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_probs(
        &self,
        hidden: Tensor<3>,
        inputs: &AttentionInputs,
    ) -> (Tensor<3>, Tensor<4>) {
        let (attended, probs) = self.attention.forward_with_probs(hidden, inputs);
        (self.feed_forward(attended), probs)
    }

    /// Linear, activation (gated or not), Linear, and the residual; the LayerNorm before or after.
    fn feed_forward(&self, attended: Tensor<3>) -> Tensor<3> {
        let input = match self.norm_first {
            true => norm(&self.layer_norm, self.layer_norm_eps, attended.clone()),
            false => attended.clone(),
        };
        let inner = match self.gated {
            true => {
                let both = linear(&self.intermediate, input, false);
                match self.hidden_act {
                    HiddenAct::Gelu => geglu(both),
                    act => {
                        let width = both.dims()[2] / 2;
                        let gate = both.clone().narrow(2, width, width);
                        activate(act, both.narrow(2, 0, width)) * gate
                    }
                }
            }
            false => linear_activate(&self.intermediate, self.hidden_act, input),
        };
        match self.norm_first {
            true => linear_add(&self.output, inner, attended),
            false => dense_add_norm(
                &self.output,
                &self.layer_norm,
                self.layer_norm_eps,
                inner,
                attended,
            ),
        }
    }
}
