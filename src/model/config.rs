//! The encoder's hyper-parameters, read from a Hugging Face `config.json`.

use burn::config::Config;
use serde_json::{Map, Value};

use crate::error::{self, Error};

/// The non-linearity between the two feed-forward projections.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact GELU, `x·Φ(x)` (BERT's `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluNew,
    Relu,
}

impl HiddenAct {
    fn parse(field: &str, value: Option<&Value>) -> error::Result<Self> {
        match value {
            None => Ok(HiddenAct::Gelu),
            Some(Value::String(name)) => match name.as_str() {
                "gelu" => Ok(HiddenAct::Gelu),
                "gelu_new" | "gelu_pytorch_tanh" => Ok(HiddenAct::GeluNew),
                "relu" => Ok(HiddenAct::Relu),
                other => Err(Error::Config(format!(
                    "field `{field}` = \"{other}\" is not supported (gelu, gelu_new, relu)"
                ))),
            },
            Some(v) => Err(Error::Config(format!(
                "field `{field}` must be a string, found {v}"
            ))),
        }
    }
}

/// The checkpoint's family (`model_type`): the same post-norm encoder, its tensors named and its
/// inputs laid out differently (see `io::layout`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    /// BERT's encoder; positions count from `pad_token_id + 1`, one segment, byte-level BPE.
    Roberta,
    /// RoBERTa with a SentencePiece (Unigram) vocabulary.
    XlmRoberta,
    /// Six layers distilled from BERT: no segment embeddings, no pooler.
    DistilBert,
    /// Narrow embeddings projected up to the hidden size; one set of layer weights shared by all layers.
    Albert,
    /// BERT trained as a discriminator (its generator does fill-mask); narrow embeddings projected up.
    Electra,
    /// RoBERTa's positions, no segments, and a relative position bias added to every layer's scores.
    Mpnet,
}

impl Architecture {
    /// Hugging Face's `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::Roberta => "roberta",
            Architecture::XlmRoberta => "xlm-roberta",
            Architecture::DistilBert => "distilbert",
            Architecture::Albert => "albert",
            Architecture::Electra => "electra",
            Architecture::Mpnet => "mpnet",
        }
    }
}

const ARCHITECTURES: [Architecture; 7] = [
    Architecture::Bert,
    Architecture::Roberta,
    Architecture::XlmRoberta,
    Architecture::DistilBert,
    Architecture::Albert,
    Architecture::Electra,
    Architecture::Mpnet,
];

/// How a sequence classifier's logits become scores (`problem_type`, as the `text-classification`
/// pipeline reads it).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ScoreFunction {
    Softmax,
    /// Each label on its own (multi-label classification, and one-logit rerankers).
    Sigmoid,
    /// Regression: the logits themselves.
    None,
}

/// BERT's shape, named as in Hugging Face's `BertConfig` (other families' fields are read into it).
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    /// The embeddings' width: the hidden size, but narrower in ALBERT and ELECTRA (then projected up).
    pub embedding_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    /// Distinct layers' weights: all of them, but ALBERT shares one set (or a few) across its layers.
    pub num_hidden_groups: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    /// 0 for models without segment embeddings (DistilBERT, MPNet).
    pub type_vocab_size: usize,
    /// Buckets of MPNet's relative position bias; 0 without one.
    pub relative_attention_num_buckets: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    /// The classifier's labels (`id2label`, by id).
    pub labels: Vec<String>,
    pub score_function: ScoreFunction,
}

impl BertConfig {
    /// Parses `config.json`; a missing or unsupported value is an error naming the field.
    pub fn from_hf_json(json: &str) -> error::Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| Error::Config("expected a JSON object".into()))?;
        let architecture = match object.get("model_type").filter(|t| !t.is_null()) {
            None => Architecture::Bert,
            Some(model_type) => ARCHITECTURES
                .into_iter()
                .find(|a| model_type.as_str() == Some(a.model_type()))
                .ok_or_else(|| {
                    let known: Vec<&str> = ARCHITECTURES.iter().map(|a| a.model_type()).collect();
                    Error::Config(format!(
                        "field `model_type` = {model_type} is not supported yet (only {})",
                        known.join(", ")
                    ))
                })?,
        };
        // DistilBERT names the same sizes its own way.
        let distil = architecture == Architecture::DistilBert;
        let name =
            |bert: &'static str, distilbert: &'static str| if distil { distilbert } else { bert };
        let size = |field: &str, default: Option<usize>| -> error::Result<usize> {
            match object.get(field) {
                None | Some(Value::Null) => {
                    default.ok_or_else(|| Error::Config(format!("missing field `{field}`")))
                }
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0 || field == "pad_token_id")
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "field `{field}` must be a positive integer, found {v}"
                        ))
                    }),
            }
        };
        if let Some(kind) = object
            .get("position_embedding_type")
            .and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(Error::Config(format!(
                "field `position_embedding_type` = \"{kind}\" is not supported (only \"absolute\")"
            )));
        }
        let layer_norm_eps = match object.get("layer_norm_eps") {
            // DistilBERT's is fixed in its code.
            None => 1e-12,
            Some(v) => v.as_f64().filter(|e| *e > 0.0).ok_or_else(|| {
                Error::Config(format!(
                    "field `layer_norm_eps` must be a positive number, found {v}"
                ))
            })?,
        };
        let labels = labels(object)?;
        let score_function = match object.get("problem_type").and_then(Value::as_str) {
            Some("multi_label_classification") => ScoreFunction::Sigmoid,
            _ if labels.len() == 1 => ScoreFunction::Sigmoid,
            _ => ScoreFunction::Softmax,
        };
        let roberta = matches!(
            architecture,
            Architecture::Roberta | Architecture::XlmRoberta | Architecture::Mpnet
        );
        let mpnet = architecture == Architecture::Mpnet;
        let hidden_size = size(name("hidden_size", "dim"), None)?;
        let num_hidden_layers = size(name("num_hidden_layers", "n_layers"), None)?;
        let albert = architecture == Architecture::Albert;
        let embedding_size = match architecture {
            Architecture::Albert | Architecture::Electra => size(
                "embedding_size",
                Some(if albert { 128 } else { hidden_size }),
            )?,
            _ => hidden_size,
        };
        let num_hidden_groups = match albert {
            true => size("num_hidden_groups", Some(1))?,
            false => num_hidden_layers,
        };
        if albert && size("inner_group_num", Some(1))? != 1 {
            return Err(Error::Config(
                "field `inner_group_num` must be 1 (ALBERT's released models): more is not supported".into(),
            ));
        }
        if !num_hidden_layers.is_multiple_of(num_hidden_groups) {
            return Err(Error::Config(format!(
                "field `num_hidden_groups` ({num_hidden_groups}) must divide `num_hidden_layers` ({num_hidden_layers})"
            )));
        }
        let config = BertConfig {
            architecture,
            vocab_size: size("vocab_size", None)?,
            embedding_size,
            hidden_size,
            num_hidden_layers,
            num_hidden_groups,
            num_attention_heads: size(name("num_attention_heads", "n_heads"), None)?,
            intermediate_size: size(name("intermediate_size", "hidden_dim"), None)?,
            // ALBERT's default is the tanh approximation.
            hidden_act: match (albert, object.get("hidden_act")) {
                (true, None) => HiddenAct::GeluNew,
                _ => HiddenAct::parse(
                    name("hidden_act", "activation"),
                    object.get(name("hidden_act", "activation")),
                )?,
            },
            max_position_embeddings: size("max_position_embeddings", Some(512))?,
            type_vocab_size: if distil || mpnet {
                0
            } else {
                size("type_vocab_size", Some(2))?
            },
            relative_attention_num_buckets: match mpnet {
                true => size("relative_attention_num_buckets", Some(32))?,
                false => 0,
            },
            layer_norm_eps,
            pad_token_id: size("pad_token_id", Some(if roberta { 1 } else { 0 }))?,
            labels,
            score_function,
        };
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "field `{}` ({}) must be a multiple of `{}` ({})",
                name("hidden_size", "dim"),
                config.hidden_size,
                name("num_attention_heads", "n_heads"),
                config.num_attention_heads
            )));
        }
        if config.max_len() < 3 {
            return Err(Error::Config(format!(
                "field `max_position_embeddings` ({}) must be at least {}: room for [CLS], a token and [SEP]",
                config.max_position_embeddings,
                config.position_offset() + 3
            )));
        }
        if config.pad_token_id >= config.vocab_size {
            return Err(Error::Config(format!(
                "field `pad_token_id` ({}) must be below `vocab_size` ({})",
                config.pad_token_id, config.vocab_size
            )));
        }
        Ok(config)
    }

    /// The first position's row in the position embeddings: RoBERTa counts from `pad_token_id + 1`.
    pub fn position_offset(&self) -> usize {
        match self.architecture {
            Architecture::Roberta | Architecture::XlmRoberta | Architecture::Mpnet => {
                self.pad_token_id + 1
            }
            _ => 0,
        }
    }

    /// Which of the distinct layers' weights layer `n` uses (ALBERT's groups; otherwise its own).
    pub fn layer_group(&self, n: usize) -> usize {
        n / (self.num_hidden_layers / self.num_hidden_groups)
    }

    /// The most tokens a sequence can have.
    pub fn max_len(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }
}

/// `id2label` as a list by id: `{"0": "NEGATIVE", "1": "POSITIVE"}` → `["NEGATIVE", "POSITIVE"]`.
fn labels(object: &Map<String, Value>) -> error::Result<Vec<String>> {
    // As `transformers`: without `id2label`, `num_labels` (default 2) labels named LABEL_0, LABEL_1, ….
    let Some(id2label) = object.get("id2label").filter(|v| !v.is_null()) else {
        let count = match object.get("num_labels") {
            None | Some(Value::Null) => 2,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "field `num_labels` must be a positive integer, found {v}"
                    ))
                })? as usize,
        };
        return Ok((0..count).map(|i| format!("LABEL_{i}")).collect());
    };
    let error = || {
        Error::Config(format!(
            "field `id2label` must map the ids 0, 1, … to label names, found {id2label}"
        ))
    };
    let map = id2label.as_object().ok_or_else(error)?;
    let mut labels = vec![None; map.len()];
    for (id, label) in map {
        let slot = id
            .parse::<usize>()
            .ok()
            .and_then(|id| labels.get_mut(id))
            .ok_or_else(error)?;
        *slot = Some(label.as_str().ok_or_else(error)?.to_string());
    }
    labels.into_iter().map(|l| l.ok_or_else(error)).collect()
}
