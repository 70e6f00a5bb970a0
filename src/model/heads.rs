//! What sits on top of the encoder: the masked-LM head (fill-mask), the sequence classifier
//! (text classification, reranking), per-token classification (NER), the span head (question answering)
//! and sentence pooling (embeddings).

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::model::config::{BertConfig, HiddenAct, ScoreFunction};
use crate::model::layer::{activate, linear_activate};
use crate::model::{Batch, BertModel};
use crate::ops;
use crate::ops::add_norm::norm;
use crate::ops::linear::{affine_transposed, linear};
use burn::tensor::activation::tanh;

/// `cls.predictions` (ModernBERT's `head` and `decoder`): dense → activation → LayerNorm, then the decoder
/// onto the vocabulary.
#[derive(Module, Debug)]
pub struct MlmHead {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    /// `[vocab, hidden]`; `None` when tied to the word embeddings (BERT's default).
    pub decoder: Option<Param<Tensor<2>>>,
    /// The decoder's; `None` without one (ModernBERT's `decoder_bias: false`).
    pub bias: Option<Param<Tensor<1>>>,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub hidden_act: HiddenAct,
}

/// `BertForMaskedLM`: the encoder with the masked-LM head.
#[derive(Module, Debug)]
pub struct BertForMaskedLM {
    pub bert: BertModel,
    pub cls: MlmHead,
}

impl MlmHead {
    pub fn init(config: &BertConfig, device: &Device) -> Self {
        Self {
            dense: LinearConfig::new(config.hidden_size, config.hidden_size).init(device),
            layer_norm: LayerNormConfig::new(config.hidden_size)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            decoder: None,
            bias: Some(Param::from_tensor(Tensor::zeros(
                [config.vocab_size],
                device,
            ))),
            layer_norm_eps: config.layer_norm_eps,
            hidden_act: config.hidden_act,
        }
    }

    /// `hidden`: `[n, hidden]` → logits `[n, vocab]`.
    pub fn forward(&self, hidden: Tensor<2>, word_embeddings: Tensor<2>) -> Tensor<2> {
        let transformed = norm(
            &self.layer_norm,
            self.layer_norm_eps,
            linear_activate(&self.dense, self.hidden_act, hidden),
        );
        let decoder = self
            .decoder
            .as_ref()
            .map(|d| d.val())
            .unwrap_or(word_embeddings);
        let bias = self.bias.as_ref().map(|bias| bias.val());
        affine_transposed(transformed, decoder, bias)
    }
}

impl AsRef<BertModel> for BertForMaskedLM {
    fn as_ref(&self) -> &BertModel {
        &self.bert
    }
}

impl BertForMaskedLM {
    /// Logits `[batch, seq, vocab]` for every position.
    pub fn forward(&self, batch: &Batch) -> Tensor<3> {
        let hidden = self.bert.forward(batch);
        let [b, s, h] = hidden.dims();
        let logits = self.head(hidden.reshape([b * s, h]));
        let vocab = logits.dims()[1];
        logits.reshape([b, s, vocab])
    }

    /// The head alone, on selected hidden states `[n, hidden]` → `[n, vocab]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.cls
            .forward(hidden, self.bert.embeddings.word_embeddings.weight.val())
    }
}

/// The activation after the classifier's dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerAct {
    /// BERT's pooler, RoBERTa's `classifier.dense`.
    Tanh,
    /// DistilBERT's `pre_classifier` (ReLU), ELECTRA's `classifier.dense` and ModernBERT's `head` (GELU).
    Act(HiddenAct),
}

/// Sequence classification from the first token (`[CLS]`, `<s>`) or the mean of the tokens (ModernBERT's
/// `classifier_pooling`): dense and activation (BERT's pooler), LayerNorm (ModernBERT's `head.norm`), then
/// the projection onto the labels.
#[derive(Module, Debug)]
pub struct ClassificationHead {
    pub dense: Linear,
    pub layer_norm: Option<LayerNorm>,
    pub out: Linear,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub act: PoolerAct,
    #[module(skip)]
    pub pooling: Pooling,
    /// By id (`id2label`).
    #[module(skip)]
    pub labels: Vec<String>,
    #[module(skip)]
    pub score_function: ScoreFunction,
}

impl ClassificationHead {
    /// `hidden`: `[batch, seq, hidden]`, `attention_mask` `[batch, seq]` → logits `[batch, labels]`.
    pub fn forward(&self, hidden: Tensor<3>, attention_mask: Tensor<2>) -> Tensor<2> {
        let pooled = ops::pool::pool(hidden, attention_mask, self.pooling == Pooling::Mean, false);
        let pooled = linear(&self.dense, pooled, false);
        let pooled = match self.act {
            PoolerAct::Tanh => tanh(pooled),
            PoolerAct::Act(act) => activate(act, pooled),
        };
        let pooled = match &self.layer_norm {
            Some(layer_norm) => norm(layer_norm, self.layer_norm_eps, pooled),
            None => pooled,
        };
        linear(&self.out, pooled, false)
    }
}

/// `*ForSequenceClassification`: the encoder with a classifier.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    pub classifier: ClassificationHead,
}

impl AsRef<BertModel> for BertForSequenceClassification {
    fn as_ref(&self) -> &BertModel {
        &self.bert
    }
}

impl BertForSequenceClassification {
    /// Logits `[batch, labels]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let hidden = self.bert.forward(batch);
        self.classifier
            .forward(hidden, batch.attention_mask.clone())
    }
}

/// How a sentence vector is made from its token vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// Average of the real tokens' vectors (sentence-transformers' default).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

/// ModernBERT's `head` under its token classifier and span head (`ModernBertPredictionHead`): dense →
/// activation → LayerNorm at every token.
#[derive(Module, Debug)]
pub struct TokenHead {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub act: HiddenAct,
}

impl TokenHead {
    /// `hidden` `[batch, seq, hidden]`, or as it is without a head.
    pub fn forward(head: Option<&Self>, hidden: Tensor<3>) -> Tensor<3> {
        match head {
            Some(head) => norm(
                &head.layer_norm,
                head.layer_norm_eps,
                linear_activate(&head.dense, head.act, hidden),
            ),
            None => hidden,
        }
    }
}

/// `*ForTokenClassification` (NER): the encoder and a Linear onto the labels at every token (after
/// ModernBERT's `head`).
#[derive(Module, Debug)]
pub struct BertForTokenClassification {
    pub bert: BertModel,
    pub head: Option<TokenHead>,
    pub classifier: Linear,
    /// By id (`id2label`).
    #[module(skip)]
    pub labels: Vec<String>,
}

impl AsRef<BertModel> for BertForTokenClassification {
    fn as_ref(&self) -> &BertModel {
        &self.bert
    }
}

impl BertForTokenClassification {
    /// Logits `[batch, seq, labels]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<3> {
        let hidden = TokenHead::forward(self.head.as_ref(), self.bert.forward(batch));
        linear(&self.classifier, hidden, false)
    }
}

/// `*ForQuestionAnswering`: the encoder and a Linear onto each token's start and end logits (BERT's
/// span head; after ModernBERT's `head`).
#[derive(Module, Debug)]
pub struct BertForQuestionAnswering {
    pub bert: BertModel,
    pub head: Option<TokenHead>,
    pub qa_outputs: Linear,
}

impl AsRef<BertModel> for BertForQuestionAnswering {
    fn as_ref(&self) -> &BertModel {
        &self.bert
    }
}

impl BertForQuestionAnswering {
    /// Start and end logits side by side, `[batch, seq, 2]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<3> {
        let hidden = TokenHead::forward(self.head.as_ref(), self.bert.forward(batch));
        linear(&self.qa_outputs, hidden, false)
    }
}

/// How a checkpoint makes its sentence vectors, as its sentence-transformers files declare them (mean,
/// normalised, without them): the default of every embedding call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sentence {
    pub pooling: Pooling,
    pub normalize: bool,
    /// `sentence_bert_config.json`'s `max_seq_length`: texts are cut there, not at the model's positions.
    pub max_seq_length: Option<usize>,
}

impl Default for Sentence {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            normalize: true,
            max_seq_length: None,
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            other => Err(crate::Error::Input(format!(
                "pooling must be \"mean\" or \"cls\", not {other:?}"
            ))),
        }
    }
}

/// `hidden`: `[batch, seq, hidden]`, `attention_mask`: `[batch, seq]` → `[batch, hidden]`, padding
/// excluded, scaled to unit length (as `torch.nn.functional.normalize`, eps 1e-12) when `normalize`.
pub fn pool(
    hidden: Tensor<3>,
    attention_mask: Tensor<2>,
    pooling: Pooling,
    normalize: bool,
) -> Tensor<2> {
    ops::pool::pool(hidden, attention_mask, pooling == Pooling::Mean, normalize)
}
