//! Input representation: token + learned position + segment embeddings, then LayerNorm.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::add_norm::add_norm;
use crate::config::BertConfig;

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
}

impl BertEmbeddings {
    pub fn init(config: &BertConfig, device: &Device) -> Self {
        let embedding = |n| EmbeddingConfig::new(n, config.hidden_size).init(device);
        Self {
            word_embeddings: embedding(config.vocab_size),
            position_embeddings: embedding(config.max_position_embeddings),
            token_type_embeddings: embedding(config.type_vocab_size),
            layer_norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    /// `input_ids`, `token_type_ids`: `[batch, seq]` → `[batch, seq, hidden]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let position_ids = Tensor::<1, Int>::arange(0..seq as i64, &input_ids.device())
            .unsqueeze::<2>()
            .expand([batch, seq]);
        let tokens = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids);
        let positions = self.position_embeddings.forward(position_ids);
        add_norm(&self.layer_norm, self.layer_norm_eps, tokens, positions)
    }
}
