//! Loading a [`Checkpoint`](crate::io::checkpoint::Checkpoint) into the burn modules, and saving them
//! back, by one walk that names every tensor once ([`Tensors`]): [`load`] builds each part from the
//! checkpoint, [`save`] writes the model's.
//!
//! F16 and BF16 are widened to f32, but for the Linear weights and the word-embedding table that stay
//! packed where a kernel reads them so (F16 and int8 on a GPU, int8 on the browser's CPU path). PyTorch's `Linear.weight` is `[out, in]`;
//! burn's is `[in, out]`, so it is transposed here.

mod load;
mod save;

pub use load::{
    load_bert, load_bert_for_masked_lm, load_bert_for_question_answering,
    load_bert_for_sequence_classification, load_bert_for_token_classification,
};
pub use save::{SaveOptions, save_bert_for_masked_lm};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::Tensor;

use crate::error::Result;
use crate::io::layout::Layout;
use crate::model::BertModel;
use crate::model::attention::BertAttention;
use crate::model::config::BertConfig;
use crate::model::disentangled::RelativeEmbeddings;
use crate::model::embeddings::BertEmbeddings;
use crate::model::heads::{ClassificationHead, MlmHead, PoolerAct};
use crate::model::layer::BertLayer;
use crate::model::position_bias::RelativePositionBias;
use crate::model::rotary::RotaryEmbedding;

/// Where a model's tensors come from or go to. [`bert`] and the heads' walks name every tensor once
/// (through [`Layout`]), for both: each part is built from the checkpoint when loading ([`load`], `have`
/// is `None`), and written out and handed back when saving ([`save`], `have` is the model's own part).
trait Tensors {
    fn tensor1(
        &mut self,
        name: &str,
        len: usize,
        have: Option<&Param<Tensor<1>>>,
    ) -> Result<Param<Tensor<1>>>;

    fn tensor2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        have: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>>;

    /// The word-embedding table `[vocab, width]`: as [`tensor2`](Self::tensor2), but where a kernel
    /// reads it as stored (f16 and int8 on a GPU, int8 on the browser's CPU path) it stays so.
    fn table(
        &mut self,
        name: &str,
        shape: [usize; 2],
        have: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        self.tensor2(name, shape, have)
    }

    /// A tensor a checkpoint may leave out (`have`: the model's, if it has one).
    fn optional2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        have: Option<Option<&Param<Tensor<2>>>>,
    ) -> Result<Option<Param<Tensor<2>>>>;

    /// Of names for one tensor, oldest convention last: the one the checkpoint has (saving: the last).
    fn which<'n>(&self, names: &[&'n str]) -> &'n str;

    /// Several PyTorch Linears (`[out, in]` weights, and `[out]` biases if `bias`) as one burn Linear,
    /// outputs side by side (`[in, n × out]`).
    fn linears(
        &mut self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
        have: Option<&Linear>,
    ) -> Result<Linear>;

    fn linear(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        have: Option<&Linear>,
    ) -> Result<Linear> {
        self.linears(&[prefix.to_string()], d_in, d_out, bias, have)
    }

    /// `{prefix}.weight` (and `{prefix}.bias` if `bias`) of `width`.
    fn layer_norm(
        &mut self,
        prefix: &str,
        width: usize,
        epsilon: f64,
        bias: bool,
        have: Option<&LayerNorm>,
    ) -> Result<LayerNorm>;
}

/// The encoder; `prefix` is `""` in a bare encoder's checkpoint, `layout.encoder` inside task models.
fn bert(
    t: &mut impl Tensors,
    c: &BertConfig,
    prefix: &str,
    have: Option<&BertModel>,
) -> Result<BertModel> {
    let names = Layout::of(c.architecture);
    let (h, width, eps) = (c.hidden_size, c.embedding_size, c.layer_norm_eps);
    let e = have.map(|m| &m.embeddings);
    let word_embeddings = Embedding {
        weight: t.table(
            &format!("{prefix}{}.weight", names.word_embeddings),
            [c.vocab_size, width],
            e.map(|e| &e.word_embeddings.weight),
        )?,
    };
    let mut embedding = |name: &str, rows, have: Option<&Embedding>| -> Result<Embedding> {
        let weight = t.tensor2(
            &format!("{prefix}{name}.weight"),
            [rows, width],
            have.map(|e| &e.weight),
        )?;
        Ok(Embedding { weight })
    };
    let position_embeddings = names
        .position_embeddings
        .filter(|_| c.absolute_positions)
        .map(|name| {
            embedding(
                name,
                c.max_position_embeddings,
                e.and_then(|e| e.position_embeddings.as_ref()),
            )
        })
        .transpose()?;
    let token_type_embeddings = names
        .token_type_embeddings
        .filter(|_| c.type_vocab_size > 0)
        .map(|name| {
            embedding(
                name,
                c.type_vocab_size,
                e.and_then(|e| e.token_type_embeddings.as_ref()),
            )
        })
        .transpose()?;
    let embeddings = BertEmbeddings {
        word_embeddings,
        position_embeddings,
        token_type_embeddings,
        layer_norm: t.layer_norm(
            &format!("{prefix}{}", names.embeddings_norm),
            width,
            eps,
            c.norm_bias,
            e.map(|e| &e.layer_norm),
        )?,
        layer_norm_eps: eps,
        position_offset: c.position_offset(),
    };
    let embeddings_project = names
        .embeddings_project
        .map(|name| {
            let have = have.and_then(|m| m.embeddings_project.as_ref());
            t.linear(&format!("{prefix}{name}"), width, h, true, have)
        })
        .transpose()?;
    // Each distinct layer once (ALBERT's groups), then every layer a clone of its group's.
    let per_group = c.num_hidden_layers / c.num_hidden_groups;
    let groups = (0..c.num_hidden_groups)
        .map(|n| {
            let name = |part: &str| format!("{prefix}{}.{n}.{part}", names.layers);
            let have = have.map(|m| &m.layers[n * per_group]);
            let a = have.map(|l| &l.attention);
            let (h, i) = (h, c.intermediate_size);
            let qkv: Vec<String> = names.qkv.iter().map(|part| name(part)).collect();
            let (attention_bias, mlp_bias) = (c.attention_bias, c.mlp_bias);
            // ModernBERT's first layer reads the embeddings' norm: no norm of its own before attention.
            let attention_norm = !(c.norm_first && n == 0);
            let attention = BertAttention {
                // Three tensors `hidden` wide, or one (ModernBERT's `Wqkv`) three times as wide.
                qkv: t.linears(
                    &qkv,
                    h,
                    h.saturating_mul(3) / qkv.len(),
                    attention_bias,
                    a.map(|a| &a.qkv),
                )?,
                dense: t.linear(
                    &name(names.attention_output),
                    h,
                    h,
                    attention_bias,
                    a.map(|a| &a.dense),
                )?,
                layer_norm: attention_norm
                    .then(|| {
                        let have = a.and_then(|a| a.layer_norm.as_ref());
                        t.layer_norm(&name(names.attention_norm), h, eps, c.norm_bias, have)
                    })
                    .transpose()?,
                num_heads: c.num_attention_heads,
                layer_norm_eps: c.layer_norm_eps,
                norm_first: c.norm_first,
                // Each layer's own is set below, where ALBERT's groups become layers.
                layer_type: c.layer_type(n * per_group),
            };
            Ok(BertLayer {
                attention,
                intermediate: t.linear(
                    &name(names.intermediate),
                    h,
                    c.feed_forward_width(),
                    mlp_bias,
                    have.map(|l| &l.intermediate),
                )?,
                output: t.linear(&name(names.output), i, h, mlp_bias, have.map(|l| &l.output))?,
                layer_norm: t.layer_norm(
                    &name(names.output_norm),
                    h,
                    eps,
                    c.norm_bias,
                    have.map(|l| &l.layer_norm),
                )?,
                layer_norm_eps: c.layer_norm_eps,
                hidden_act: c.hidden_act,
                norm_first: c.norm_first,
                gated: c.gated_feed_forward,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = (0..c.num_hidden_layers)
        .map(|n| {
            let mut layer = groups[c.layer_group(n)].clone();
            layer.attention.layer_type = c.layer_type(n);
            layer
        })
        .collect();
    let position_bias = names
        .relative_attention_bias
        .map(|name| {
            let have = have.and_then(|m| m.position_bias.as_ref());
            let weight = t.tensor2(
                &format!("{prefix}{name}.weight"),
                [c.relative_attention_num_buckets, c.num_attention_heads],
                have.map(|b| &b.relative_attention_bias.weight),
            )?;
            Ok(RelativePositionBias {
                relative_attention_bias: Embedding { weight },
                rows: Default::default(),
            })
        })
        .transpose()?;
    let relative_embeddings = names
        .rel_embeddings
        .as_ref()
        .zip(c.relative_attention)
        .map(|(names, options)| {
            let have = have.and_then(|m| m.relative_embeddings.as_ref());
            let weight = t.tensor2(
                &format!("{prefix}{}.weight", names.table),
                [options.span().saturating_mul(2), h],
                have.map(|r| &r.rel_embeddings.weight),
            )?;
            let layer_norm = options
                .norm
                .then(|| {
                    let have = have.and_then(|r| r.layer_norm.as_ref());
                    t.layer_norm(&format!("{prefix}{}", names.norm), h, eps, true, have)
                })
                .transpose()?;
            Ok(RelativeEmbeddings {
                rel_embeddings: Embedding { weight },
                layer_norm,
                layer_norm_eps: eps,
                options,
            })
        })
        .transpose()?;
    let final_norm = names
        .final_norm
        .map(|name| {
            let have = have.and_then(|m| m.final_norm.as_ref());
            t.layer_norm(&format!("{prefix}{name}"), h, eps, c.norm_bias, have)
        })
        .transpose()?;
    let head_dim = h / c.num_attention_heads;
    Ok(BertModel {
        embeddings,
        embeddings_project,
        layers,
        position_bias,
        relative_embeddings,
        rotary: c
            .rope_theta
            .map(|theta| RotaryEmbedding::new(head_dim, theta)),
        sliding_window: c.has_local_layers().then(|| c.sliding_window()),
        final_norm,
        layer_norm_eps: eps,
    })
}

/// The masked-LM head: its decoder is tied to the word embeddings unless the checkpoint has its own.
fn mlm_head(t: &mut impl Tensors, c: &BertConfig, have: Option<&MlmHead>) -> Result<MlmHead> {
    let names = Layout::mlm_of(c);
    // ALBERT's and ELECTRA's head maps back down to the embeddings' width, where the tied decoder is.
    let (h, e, v) = (c.hidden_size, c.embedding_size, c.vocab_size);
    let bias = t.which(&names.bias);
    let eps = c.layer_norm_eps;
    Ok(MlmHead {
        dense: t.linear(names.dense, h, e, c.classifier_bias, have.map(|m| &m.dense))?,
        layer_norm: t.layer_norm(names.norm, e, eps, c.norm_bias, have.map(|m| &m.layer_norm))?,
        decoder: match names.decoder {
            Some(name) => t.optional2(name, [v, e], have.map(|m| m.decoder.as_ref()))?,
            None => None,
        },
        bias: c
            .decoder_bias
            .then(|| t.tensor1(bias, v, have.and_then(|m| m.bias.as_ref())))
            .transpose()?,
        layer_norm_eps: eps,
        hidden_act: names.act.unwrap_or(c.head_act),
    })
}

/// The sequence classifier on the pooled tokens; `prefix` is the encoder's (BERT's pooler is part of it).
fn classification_head(
    t: &mut impl Tensors,
    c: &BertConfig,
    prefix: &str,
    have: Option<&ClassificationHead>,
) -> Result<ClassificationHead> {
    let names = &Layout::of(c.architecture).classifier;
    let h = c.hidden_size;
    let labels = c.labels.len();
    let dense = match names.pooler_in_encoder {
        true => format!("{prefix}{}", names.dense),
        false => names.dense.to_string(),
    };
    let eps = c.layer_norm_eps;
    Ok(ClassificationHead {
        dense: t.linear(&dense, h, h, c.classifier_bias, have.map(|m| &m.dense))?,
        layer_norm: names
            .norm
            .map(|name| {
                let have = have.and_then(|m| m.layer_norm.as_ref());
                t.layer_norm(name, h, eps, c.norm_bias, have)
            })
            .transpose()?,
        out: t.linear(names.out, h, labels, true, have.map(|m| &m.out))?,
        layer_norm_eps: eps,
        act: names.act.unwrap_or(PoolerAct::Act(c.pooler_act)),
        pooling: c.classifier_pooling,
        labels: c.labels.clone(),
        score_function: c.score_function,
    })
}
