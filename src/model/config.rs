//! The encoder's hyper-parameters, read from a Hugging Face `config.json`.

use burn::config::Config;
use serde_json::{Map, Value};

use crate::error::{self, Error};
use crate::model::heads::Pooling;

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

/// The checkpoint's family (`model_type`): the same encoder (post-norm, but ModernBERT's pre-norm), its
/// tensors named and its inputs laid out differently (see `io::layout`).
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
    /// Rotary positions, pre-norm layers with a final norm, a GeGLU feed-forward, global and sliding-window
    /// layers, biases as the config says.
    ModernBert,
    /// DeBERTa-v2 and v3: disentangled attention over relative positions; absolute positions and segments
    /// as the config says (v3 has neither).
    DebertaV2,
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
            Architecture::ModernBert => "modernbert",
            Architecture::DebertaV2 => "deberta-v2",
        }
    }
}

const ARCHITECTURES: [Architecture; 9] = [
    Architecture::Bert,
    Architecture::Roberta,
    Architecture::XlmRoberta,
    Architecture::DistilBert,
    Architecture::Albert,
    Architecture::Electra,
    Architecture::Mpnet,
    Architecture::ModernBert,
    Architecture::DebertaV2,
];

/// Which tokens a layer's attention sees (transformers' `layer_types`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LayerType {
    /// All of them (`full_attention`): every layer of BERT, ModernBERT's global layers.
    Full,
    /// Those at most `local_attention / 2` positions away (`sliding_attention`): ModernBERT's local layers.
    Sliding,
}

/// The base of the rotary embeddings' frequencies (`rope_theta`), per kind of layer.
#[derive(Config, Debug, Copy, PartialEq)]
pub struct RopeTheta {
    pub full: f64,
    pub sliding: f64,
}

impl RopeTheta {
    pub fn of(&self, layer_type: LayerType) -> f64 {
        match layer_type {
            LayerType::Full => self.full,
            LayerType::Sliding => self.sliding,
        }
    }
}

/// DeBERTa's disentangled attention: which terms each score adds to QKᵀ, and how relative positions map
/// to rows of the relative embeddings.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub struct RelativeAttention {
    /// Content to position: the query against the key's relative position (`"c2p"` in `pos_att_type`).
    pub c2p: bool,
    /// Position to content: the key against the query's (`"p2c"`).
    pub p2c: bool,
    /// `position_buckets`: distances from half of them on share logarithmically wider buckets; 0: none.
    pub position_buckets: usize,
    /// `max_relative_positions` (`max_position_embeddings` where it is below 1): the farthest distance the
    /// buckets tell apart, or without buckets, the span of the table.
    pub max_relative_positions: usize,
    /// Whether the relative embeddings are normalised first (`norm_rel_ebd = "layer_norm"`).
    pub norm: bool,
}

impl RelativeAttention {
    /// Relative positions on either side: the table has twice as many rows.
    pub fn span(&self) -> usize {
        match self.position_buckets {
            0 => self.max_relative_positions,
            buckets => buckets,
        }
    }

    /// The terms of each score, whose width they share: scores are divided by √(head width × terms).
    pub fn scale_factor(&self) -> usize {
        1 + self.c2p as usize + self.p2c as usize
    }
}

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
    /// Whether learned absolute positions are added to the token embeddings: not with rotary positions, nor
    /// in DeBERTa-v3 (`position_biased_input`).
    pub absolute_positions: bool,
    /// DeBERTa's disentangled attention.
    pub relative_attention: Option<RelativeAttention>,
    /// Buckets of MPNet's relative position bias; 0 without one.
    pub relative_attention_num_buckets: usize,
    /// Rotary position embeddings in place of learned ones (ModernBERT), their base per kind of layer.
    pub rope_theta: Option<RopeTheta>,
    /// Per layer, the tokens its attention sees (transformers 5's `layer_types`); when config.json lists none,
    /// `global_attn_every_n_layers` decides. See [`layer_type`](Self::layer_type).
    pub layer_types: Vec<LayerType>,
    /// Every n-th layer from the first sees all tokens, the others a window (ModernBERT's local layers); 1 (all
    /// global) in every other family.
    pub global_attn_every_n_layers: usize,
    /// The local layers' window in tokens, half of it on either side (ModernBERT's `local_attention`).
    pub local_attention: usize,
    /// Pre-norm (ModernBERT): LayerNorm before the attention and before the feed-forward, the residuals added
    /// after, a final norm after the last layer. Post-norm (BERT): LayerNorm after each residual.
    pub norm_first: bool,
    /// GeGLU (ModernBERT): the first feed-forward projection twice as wide, its halves `input` and `gate`,
    /// act(input) · gate. Otherwise act(input).
    pub gated_feed_forward: bool,
    /// Whether Q, K, V and the attention's output projection have biases (ModernBERT's `attention_bias`).
    pub attention_bias: bool,
    /// Whether the feed-forward's projections have biases (`mlp_bias`).
    pub mlp_bias: bool,
    /// Whether the LayerNorms have biases (`norm_bias`).
    pub norm_bias: bool,
    /// Whether the task heads' dense layer has a bias (`classifier_bias`).
    pub classifier_bias: bool,
    /// Whether the masked-LM decoder has a bias (`decoder_bias`).
    pub decoder_bias: bool,
    /// The heads' activation where the family's code reads it from the config: `hidden_act` (BERT's MLM head),
    /// ModernBERT's `classifier_activation` (both its heads).
    pub head_act: HiddenAct,
    /// The sequence classifier's activation where the family's code reads it from the config: ModernBERT's
    /// `classifier_activation`, DeBERTa's `pooler_hidden_act`.
    pub pooler_act: HiddenAct,
    /// DeBERTa's masked-LM head: transformers' default `cls.predictions.*` (`legacy`), or the original code's
    /// `lm_predictions.lm_head.*`; true in every other family.
    pub legacy_mlm_head: bool,
    /// What the sequence classifier reads: the first token, or ModernBERT's mean of the tokens
    /// (`classifier_pooling`).
    pub classifier_pooling: Pooling,
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
        let modern = architecture == Architecture::ModernBert;
        let deberta = architecture == Architecture::DebertaV2;
        // DistilBERT's is fixed in its code; ModernBERT's is `norm_eps`.
        let layer_norm_eps = match (modern, deberta) {
            (true, _) => number(object, "norm_eps", 1e-5)?,
            (_, true) => number(object, "layer_norm_eps", 1e-7)?,
            _ => number(object, "layer_norm_eps", 1e-12)?,
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
        // ALBERT's default is the tanh approximation; ModernBERT names it `hidden_activation`.
        let act_field = match architecture {
            Architecture::DistilBert => "activation",
            Architecture::ModernBert => "hidden_activation",
            _ => "hidden_act",
        };
        let hidden_act = match (albert, object.get(act_field)) {
            (true, None) => HiddenAct::GeluNew,
            (_, value) => HiddenAct::parse(act_field, value)?,
        };
        // ModernBERT's config says which biases there are (by default, ModernBERT-base's); every other
        // family has them all.
        let bias = |field: &str, modern_default: bool| match modern {
            true => flag(object, field, modern_default),
            false => Ok(true),
        };
        let max_position_embeddings = size(
            "max_position_embeddings",
            Some(if modern { 8192 } else { 512 }),
        )?;
        if deberta {
            deberta_unsupported(object, hidden_size)?;
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
            hidden_act,
            max_position_embeddings,
            type_vocab_size: match architecture {
                _ if distil || mpnet || modern => 0,
                // DeBERTa-v3 has none: 0 is its default.
                Architecture::DebertaV2 => match object.get("type_vocab_size") {
                    Some(Value::Number(n)) if n.as_u64() == Some(0) => 0,
                    _ => size("type_vocab_size", Some(0))?,
                },
                _ => size("type_vocab_size", Some(2))?,
            },
            absolute_positions: match architecture {
                Architecture::ModernBert => false,
                Architecture::DebertaV2 => flag(object, "position_biased_input", true)?,
                _ => true,
            },
            relative_attention: deberta
                .then(|| relative_attention(object, max_position_embeddings))
                .transpose()?,
            relative_attention_num_buckets: match mpnet {
                true => size("relative_attention_num_buckets", Some(32))?,
                false => 0,
            },
            rope_theta: modern.then(|| rope_theta(object)).transpose()?,
            layer_types: match modern {
                true => layer_types(object, num_hidden_layers)?,
                false => Vec::new(),
            },
            global_attn_every_n_layers: match modern {
                true => size("global_attn_every_n_layers", Some(3))?,
                false => 1,
            },
            local_attention: match modern {
                true => size("local_attention", Some(128))?,
                false => 0,
            },
            norm_first: modern,
            gated_feed_forward: modern,
            attention_bias: bias("attention_bias", false)?,
            mlp_bias: bias("mlp_bias", false)?,
            norm_bias: bias("norm_bias", false)?,
            classifier_bias: bias("classifier_bias", false)?,
            decoder_bias: bias("decoder_bias", true)?,
            head_act: match modern {
                true => {
                    HiddenAct::parse("classifier_activation", object.get("classifier_activation"))?
                }
                false => hidden_act,
            },
            pooler_act: match architecture {
                Architecture::ModernBert => {
                    HiddenAct::parse("classifier_activation", object.get("classifier_activation"))?
                }
                Architecture::DebertaV2 => {
                    HiddenAct::parse("pooler_hidden_act", object.get("pooler_hidden_act"))?
                }
                _ => hidden_act,
            },
            legacy_mlm_head: !deberta || flag(object, "legacy", true)?,
            classifier_pooling: match object.get("classifier_pooling").filter(|_| modern) {
                None => Pooling::Cls,
                Some(v) => match v.as_str() {
                    Some("cls") => Pooling::Cls,
                    Some("mean") => Pooling::Mean,
                    _ => {
                        return Err(Error::Config(format!(
                            "field `classifier_pooling` = {v} is not supported (\"cls\", \"mean\")"
                        )));
                    }
                },
            },
            layer_norm_eps,
            pad_token_id: size(
                "pad_token_id",
                Some(match architecture {
                    _ if roberta => 1,
                    // ModernBERT-base's [PAD].
                    Architecture::ModernBert => 50283,
                    _ => 0,
                }),
            )?,
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
        if config.rope_theta.is_some()
            && !(config.hidden_size / config.num_attention_heads).is_multiple_of(2)
        {
            return Err(Error::Config(format!(
                "rotary positions need heads of an even width, not {} (`hidden_size` / `num_attention_heads`)",
                config.hidden_size / config.num_attention_heads
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

    /// The first feed-forward projection's width: twice the inner size with GeGLU (input and gate).
    pub fn feed_forward_width(&self) -> usize {
        match self.gated_feed_forward {
            // Saturating: config.json's sizes are checked against the tensors only later.
            true => self.intermediate_size.saturating_mul(2),
            false => self.intermediate_size,
        }
    }

    /// How far a local layer's tokens see on either side (transformers' `sliding_window`).
    pub fn sliding_window(&self) -> usize {
        self.local_attention / 2
    }

    /// The tokens layer `n`'s attention sees.
    pub fn layer_type(&self, n: usize) -> LayerType {
        match self.layer_types.get(n) {
            Some(layer_type) => *layer_type,
            None if n.is_multiple_of(self.global_attn_every_n_layers) => LayerType::Full,
            None => LayerType::Sliding,
        }
    }

    /// Whether any layer sees a window of the tokens.
    pub fn has_local_layers(&self) -> bool {
        match self.layer_types.is_empty() {
            true => self.global_attn_every_n_layers > 1 && self.num_hidden_layers > 1,
            false => self.layer_types.contains(&LayerType::Sliding),
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

/// A positive number, `default` if absent.
fn number(object: &Map<String, Value>, field: &str, default: f64) -> error::Result<f64> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_f64().filter(|x| *x > 0.0).ok_or_else(|| {
            Error::Config(format!(
                "field `{field}` must be a positive number, found {v}"
            ))
        }),
    }
}

/// `true` or `false`, `default` if absent.
fn flag(object: &Map<String, Value>, field: &str, default: bool) -> error::Result<bool> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| {
            Error::Config(format!("field `{field}` must be true or false, found {v}"))
        }),
    }
}

/// DeBERTa's relative attention as transformers' `DisentangledSelfAttention` reads it. Every released
/// DeBERTa-v2/v3 projects positions with the layers' own query and key weights (`share_att_key`); the
/// separate projections of DeBERTa-v2's research code are not supported.
fn relative_attention(
    object: &Map<String, Value>,
    max_position_embeddings: usize,
) -> error::Result<RelativeAttention> {
    if !flag(object, "relative_attention", false)? {
        return Err(Error::Config(
            "DeBERTa without `relative_attention` is not supported (every released DeBERTa-v2/v3 has it)".into(),
        ));
    }
    if !flag(object, "share_att_key", false)? {
        return Err(Error::Config(
            "DeBERTa without `share_att_key` is not supported (every released DeBERTa-v2/v3 has it)".into(),
        ));
    }
    // A list, or the older "p2c|c2p"; terms other than these two change nothing in transformers.
    let terms: Vec<String> = match object.get("pos_att_type") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split('|').map(|t| t.trim().to_lowercase()).collect(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_lowercase))
            .collect(),
        Some(v) => {
            return Err(Error::Config(format!(
                "field `pos_att_type` must be a list of \"c2p\" and \"p2c\", found {v}"
            )));
        }
    };
    // transformers reads -1 (or any number below 1) as "none" in both.
    let signed = |field: &str| -> error::Result<i64> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(-1),
            Some(v) => v.as_i64().ok_or_else(|| {
                Error::Config(format!("field `{field}` must be an integer, found {v}"))
            }),
        }
    };
    let max_relative_positions = match signed("max_relative_positions")? {
        n if n < 1 => max_position_embeddings,
        n => n as usize,
    };
    let position_buckets = signed("position_buckets")?.max(0) as usize;
    let norm = match object.get("norm_rel_ebd") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => s
            .split('|')
            .any(|t| t.trim().eq_ignore_ascii_case("layer_norm")),
        Some(v) => {
            return Err(Error::Config(format!(
                "field `norm_rel_ebd` must be a string, found {v}"
            )));
        }
    };
    if position_buckets == 1
        || (position_buckets > 0 && max_relative_positions <= position_buckets / 2 + 1)
    {
        return Err(Error::Config(format!(
            "fields `position_buckets` ({position_buckets}) and `max_relative_positions` ({max_relative_positions}) leave no room for logarithmic buckets"
        )));
    }
    Ok(RelativeAttention {
        c2p: terms.iter().any(|t| t == "c2p"),
        p2c: terms.iter().any(|t| t == "p2c"),
        position_buckets,
        max_relative_positions,
        norm,
    })
}

/// DeBERTa-v2's options that no DeBERTa-v3 has, which webbert does not run: a convolution beside the first
/// layer (deberta-v2-xlarge), embeddings narrower than the encoder, a pooler of another width.
fn deberta_unsupported(object: &Map<String, Value>, hidden_size: usize) -> error::Result<()> {
    if let Some(kernel) = object.get("conv_kernel_size").and_then(Value::as_u64)
        && kernel > 0
    {
        return Err(Error::Config(format!(
            "field `conv_kernel_size` = {kernel} is not supported (DeBERTa-v2's convolution layer; DeBERTa-v3 has none)"
        )));
    }
    for field in ["embedding_size", "pooler_hidden_size"] {
        if let Some(width) = object.get(field).filter(|v| !v.is_null())
            && width.as_u64() != Some(hidden_size as u64)
        {
            return Err(Error::Config(format!(
                "field `{field}` = {width} is not supported (only `hidden_size`, {hidden_size})"
            )));
        }
    }
    Ok(())
}

/// ModernBERT's `layer_types` (transformers 5), one per layer; none if absent (the Hub's configs give
/// `global_attn_every_n_layers` instead).
fn layer_types(object: &Map<String, Value>, layers: usize) -> error::Result<Vec<LayerType>> {
    let Some(types) = object.get("layer_types").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let error = || {
        Error::Config(format!(
            "field `layer_types` must list \"full_attention\" or \"sliding_attention\" for each of the {layers} layers, found {types}"
        ))
    };
    let types = types
        .as_array()
        .filter(|t| t.len() == layers)
        .ok_or_else(error)?;
    types
        .iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Ok(LayerType::Full),
            Some("sliding_attention") => Ok(LayerType::Sliding),
            _ => Err(error()),
        })
        .collect()
}

/// ModernBERT's rotary bases: `rope_parameters` per layer type (transformers 5), else `global_rope_theta` and
/// `local_rope_theta` (the Hub's configs), by default 160,000 and 10,000. Only the default (unscaled) RoPE.
fn rope_theta(object: &Map<String, Value>) -> error::Result<RopeTheta> {
    if let Some(scaling) = object.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(Error::Config(format!(
            "field `rope_scaling` = {scaling} is not supported (only unscaled rotary positions)"
        )));
    }
    let theta = |layer_type: &str, old_field: &str, default: f64| -> error::Result<f64> {
        let field = format!("rope_parameters.{layer_type}");
        match object
            .get("rope_parameters")
            .and_then(|p| p.get(layer_type))
            .filter(|p| !p.is_null())
        {
            None => number(object, old_field, default),
            Some(Value::Object(params)) => {
                if let Some(kind) = params
                    .get("rope_type")
                    .filter(|k| k.as_str() != Some("default"))
                {
                    return Err(Error::Config(format!(
                        "field `{field}.rope_type` = {kind} is not supported (only \"default\")"
                    )));
                }
                match params.get("rope_theta") {
                    None | Some(Value::Null) => number(object, old_field, default),
                    Some(v) => v.as_f64().filter(|x| *x > 0.0).ok_or_else(|| {
                        Error::Config(format!(
                            "field `{field}.rope_theta` must be a positive number, found {v}"
                        ))
                    }),
                }
            }
            Some(v) => Err(Error::Config(format!(
                "field `{field}` must be an object, found {v}"
            ))),
        }
    };
    Ok(RopeTheta {
        full: theta("full_attention", "global_rope_theta", 160_000.0)?,
        sliding: theta("sliding_attention", "local_rope_theta", 10_000.0)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// answerdotai/ModernBERT-base's config.json as the Hub has it (transformers 4.x names: the layer pattern as
    /// `global_attn_every_n_layers`, the bases as `global_rope_theta` and `local_rope_theta`).
    const MODERNBERT_BASE: &str = r#"{
        "architectures": ["ModernBertForMaskedLM"], "attention_bias": false, "attention_dropout": 0.0,
        "bos_token_id": 50281, "classifier_activation": "gelu", "classifier_bias": false,
        "classifier_dropout": 0.0, "classifier_pooling": "mean", "cls_token_id": 50281, "decoder_bias": true,
        "deterministic_flash_attn": false, "embedding_dropout": 0.0, "eos_token_id": 50282,
        "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "gradient_checkpointing": false,
        "hidden_activation": "gelu", "hidden_size": 768, "initializer_cutoff_factor": 2.0,
        "initializer_range": 0.02, "intermediate_size": 1152, "layer_norm_eps": 1e-05, "local_attention": 128,
        "local_rope_theta": 10000.0, "max_position_embeddings": 8192, "mlp_bias": false, "mlp_dropout": 0.0,
        "model_type": "modernbert", "norm_bias": false, "norm_eps": 1e-05, "num_attention_heads": 12,
        "num_hidden_layers": 22, "pad_token_id": 50283, "position_embedding_type": "absolute",
        "reference_compile": true, "sep_token_id": 50282, "sparse_pred_ignore_index": -100,
        "sparse_prediction": false, "torch_dtype": "float32", "transformers_version": "4.47.0.dev0",
        "vocab_size": 50368
    }"#;

    #[test]
    fn modernbert_base_from_the_hub() {
        let c = BertConfig::from_hf_json(MODERNBERT_BASE).unwrap();
        assert_eq!(c.architecture, Architecture::ModernBert);
        let global: Vec<usize> = (0..22)
            .filter(|&n| c.layer_type(n) == LayerType::Full)
            .collect();
        assert_eq!(global, [0, 3, 6, 9, 12, 15, 18, 21]);
        assert!(c.has_local_layers());
        assert_eq!(
            c.rope_theta,
            Some(RopeTheta {
                full: 160_000.0,
                sliding: 10_000.0
            })
        );
        assert_eq!((c.local_attention, c.sliding_window()), (128, 64));
        assert_eq!((c.feed_forward_width(), c.max_len()), (2304, 8192));
        assert_eq!(
            (c.layer_norm_eps, c.pad_token_id, c.type_vocab_size),
            (1e-5, 50283, 0)
        );
        assert!(c.norm_first && c.gated_feed_forward && c.decoder_bias);
        assert!(!(c.attention_bias || c.mlp_bias || c.norm_bias || c.classifier_bias));
        assert_eq!(
            (c.hidden_act, c.head_act, c.classifier_pooling),
            (HiddenAct::Gelu, HiddenAct::Gelu, Pooling::Mean)
        );
    }

    /// transformers 5 writes `layer_types` and `rope_parameters`, which take precedence over the old names.
    #[test]
    fn modernbert_layer_types_and_rope_parameters() {
        let json = MODERNBERT_BASE.replace(
            r#""num_hidden_layers": 22,"#,
            r#""num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"],
               "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                   "sliding_attention": {"rope_type": "default"}},"#,
        );
        let c = BertConfig::from_hf_json(&json).unwrap();
        let types = [c.layer_type(0), c.layer_type(1)];
        assert_eq!(types, [LayerType::Sliding, LayerType::Full]);
        // A layer type's parameters without a base fall back to the old field, as transformers does.
        assert_eq!(
            c.rope_theta,
            Some(RopeTheta {
                full: 1000.0,
                sliding: 10_000.0
            })
        );
    }

    /// microsoft/deberta-v3-base's config.json as the Hub has it (`pos_att_type` in the older "p2c|c2p" form).
    const DEBERTA_V3_BASE: &str = r#"{
        "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "max_position_embeddings": 512, "relative_attention": true, "position_buckets": 256,
        "norm_rel_ebd": "layer_norm", "share_att_key": true, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
        "max_relative_positions": -1, "position_biased_input": false, "num_attention_heads": 12,
        "num_hidden_layers": 12, "type_vocab_size": 0, "vocab_size": 128100
    }"#;

    #[test]
    fn deberta_v3_base_from_the_hub() {
        let c = BertConfig::from_hf_json(DEBERTA_V3_BASE).unwrap();
        assert_eq!(c.architecture, Architecture::DebertaV2);
        let relative = c.relative_attention.unwrap();
        assert_eq!(
            relative,
            RelativeAttention {
                c2p: true,
                p2c: true,
                position_buckets: 256,
                max_relative_positions: 512,
                norm: true,
            }
        );
        assert_eq!((relative.span(), relative.scale_factor()), (256, 3));
        assert!(!c.absolute_positions && c.type_vocab_size == 0);
        assert_eq!(
            (c.layer_norm_eps, c.pad_token_id, c.max_len()),
            (1e-7, 0, 512)
        );
        assert_eq!(
            (c.pooler_act, c.classifier_pooling),
            (HiddenAct::Gelu, Pooling::Cls)
        );
        assert!(!c.norm_first && c.attention_bias && c.rope_theta.is_none());
        // The list form, one term, no buckets: the table spans `max_relative_positions` either way.
        let json = DEBERTA_V3_BASE
            .replace(r#""p2c|c2p""#, r#"["c2p"]"#)
            .replace(r#""position_buckets": 256"#, r#""position_buckets": -1"#)
            .replace(
                r#""max_relative_positions": -1"#,
                r#""max_relative_positions": 24"#,
            );
        let relative = BertConfig::from_hf_json(&json)
            .unwrap()
            .relative_attention
            .unwrap();
        assert_eq!((relative.c2p, relative.p2c), (true, false));
        assert_eq!((relative.span(), relative.scale_factor()), (24, 2));
    }

    /// Other families keep BERT's shape: post-norm, biases everywhere, learned positions, all layers global.
    #[test]
    fn bert_keeps_its_options() {
        let c = BertConfig::from_hf_json(
            r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 1,
                "intermediate_size": 6, "hidden_act": "relu", "global_rope_theta": 5.0, "norm_bias": false}"#,
        )
        .unwrap();
        assert_eq!([c.layer_type(0), c.layer_type(1)], [LayerType::Full; 2]);
        assert!(!c.has_local_layers());
        assert_eq!((c.rope_theta, c.local_attention), (None, 0));
        assert!(!c.norm_first && !c.gated_feed_forward);
        assert!(
            c.attention_bias && c.mlp_bias && c.norm_bias && c.classifier_bias && c.decoder_bias
        );
        assert_eq!(
            (c.head_act, c.classifier_pooling),
            (HiddenAct::Relu, Pooling::Cls)
        );
        assert_eq!(c.feed_forward_width(), 6);
        assert!(c.absolute_positions && c.relative_attention.is_none());
    }
}
