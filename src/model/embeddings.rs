//! Input representation: token + learned position (+ segment) embeddings, then LayerNorm; where attention
//! holds the positions (ModernBERT's rotary ones, DeBERTa's relative ones), token (+ segment) embeddings.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Int, Tensor};

use crate::ops::embeddings::embed_norm;

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    /// `None` where attention alone sees positions (ModernBERT, DeBERTa-v3).
    pub position_embeddings: Option<Embedding>,
    /// `None` where the family has no segments (DistilBERT).
    pub token_type_embeddings: Option<Embedding>,
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
    /// The row of the first position (RoBERTa's count from `pad_token_id + 1`).
    pub position_offset: usize,
}

impl BertEmbeddings {
    /// `input_ids`, `token_type_ids`: `[batch, seq]` → `[batch, seq, hidden]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let positions = self.position_embeddings.as_ref().map(|positions| {
            let positions = positions.weight.val();
            let rows = positions.dims()[0] - self.position_offset;
            positions.narrow(0, self.position_offset, rows)
        });
        embed_norm(
            input_ids,
            token_type_ids,
            self.word_embeddings.weight.val(),
            positions,
            self.token_type_embeddings.as_ref().map(|t| t.weight.val()),
            self.layer_norm.gamma.val(),
            self.layer_norm.beta.as_ref().map(|beta| beta.val()),
            self.layer_norm_eps,
        )
    }
}
