//! The encoder's hyper-parameters, read from a Hugging Face `config.json`.

use burn::config::Config;
use serde_json::Value;

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

/// BERT's shape, named as in Hugging Face's `BertConfig`.
#[derive(Config, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
}

impl BertConfig {
    /// Parses `config.json`; a missing or unsupported value is an error naming the field.
    pub fn from_hf_json(json: &str) -> error::Result<Self> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| Error::Config("expected a JSON object".into()))?;
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
        // Other architectures name their tensors and shape their layers differently: say so up front.
        if let Some(model_type) = object.get("model_type").filter(|t| !t.is_null())
            && model_type.as_str() != Some("bert")
        {
            return Err(Error::Config(format!(
                "field `model_type` = {model_type} is not supported yet (only \"bert\")"
            )));
        }
        if let Some(kind) = object
            .get("position_embedding_type")
            .and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(Error::Config(format!(
                "field `position_embedding_type` = \"{kind}\" is not supported (only \"absolute\")"
            )));
        }
        let hidden_act = match object.get("hidden_act") {
            None => HiddenAct::Gelu,
            Some(Value::String(name)) => match name.as_str() {
                "gelu" => HiddenAct::Gelu,
                "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluNew,
                "relu" => HiddenAct::Relu,
                other => {
                    return Err(Error::Config(format!(
                        "field `hidden_act` = \"{other}\" is not supported (gelu, gelu_new, relu)"
                    )));
                }
            },
            Some(v) => {
                return Err(Error::Config(format!(
                    "field `hidden_act` must be a string, found {v}"
                )));
            }
        };
        let layer_norm_eps = match object.get("layer_norm_eps") {
            None => 1e-12,
            Some(v) => v.as_f64().filter(|e| *e > 0.0).ok_or_else(|| {
                Error::Config(format!(
                    "field `layer_norm_eps` must be a positive number, found {v}"
                ))
            })?,
        };
        let config = BertConfig {
            vocab_size: size("vocab_size", None)?,
            hidden_size: size("hidden_size", None)?,
            num_hidden_layers: size("num_hidden_layers", None)?,
            num_attention_heads: size("num_attention_heads", None)?,
            intermediate_size: size("intermediate_size", None)?,
            hidden_act,
            max_position_embeddings: size("max_position_embeddings", Some(512))?,
            type_vocab_size: size("type_vocab_size", Some(2))?,
            layer_norm_eps,
            pad_token_id: size("pad_token_id", Some(0))?,
        };
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "field `hidden_size` ({}) must be a multiple of `num_attention_heads` ({})",
                config.hidden_size, config.num_attention_heads
            )));
        }
        if config.max_position_embeddings < 3 {
            return Err(Error::Config(format!(
                "field `max_position_embeddings` ({}) must be at least 3: room for [CLS], a token and [SEP]",
                config.max_position_embeddings
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
}
