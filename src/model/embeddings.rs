//! Input representation: token + learned position + segment embeddings, then LayerNorm.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Int, Tensor};

use crate::ops::embeddings::embed_norm;

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
}

impl BertEmbeddings {
    /// `input_ids`, `token_type_ids`: `[batch, seq]` → `[batch, seq, hidden]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let hidden = self.word_embeddings.weight.dims()[1];
        let beta = match &self.layer_norm.beta {
            Some(beta) => beta.val(),
            None => Tensor::zeros([hidden], &input_ids.device()),
        };
        embed_norm(
            input_ids,
            token_type_ids,
            self.word_embeddings.weight.val(),
            self.position_embeddings.weight.val(),
            self.token_type_embeddings.weight.val(),
            self.layer_norm.gamma.val(),
            beta,
            self.layer_norm_eps,
        )
    }
}
