//! Hugging Face's tensor names, per architecture: the one place they are written. The encoder and its
//! heads are the same modules for every family here; only these names differ.

use crate::model::config::{Architecture, BertConfig, HiddenAct};
use crate::model::heads::PoolerAct;

/// Where each of the encoder's tensors sits in a checkpoint, relative to [`Layout::encoder`]; a layer's
/// names are relative to `{layers}.{n}`.
pub struct Layout {
    /// The encoder's prefix inside a task model (`bert.`); a bare encoder checkpoint has none.
    pub encoder: &'static str,
    pub word_embeddings: &'static str,
    /// `None`: rotary positions (ModernBERT).
    pub position_embeddings: Option<&'static str>,
    /// `None`: the family has no segments.
    pub token_type_embeddings: Option<&'static str>,
    pub embeddings_norm: &'static str,
    /// The projection from narrow embeddings up to the hidden size (ALBERT, ELECTRA).
    pub embeddings_project: Option<&'static str>,
    /// The layers, `{layers}.{n}.{part}`; ALBERT's are its groups of shared weights.
    pub layers: &'static str,
    /// MPNet's relative position bias, `[buckets, heads]`.
    pub relative_attention_bias: Option<&'static str>,
    /// DeBERTa's relative position embeddings, `[2 × span, hidden]`, and their LayerNorm.
    pub rel_embeddings: Option<RelEmbeddingNames>,
    /// The query, key and value projections, three or one (ModernBERT's `Wqkv`).
    pub qkv: &'static [&'static str],
    pub attention_output: &'static str,
    /// After the attention's residual (post-norm), or before the attention (pre-norm).
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    /// After the feed-forward's residual (post-norm), or before the feed-forward (pre-norm).
    pub output_norm: &'static str,
    /// After the last layer (ModernBERT).
    pub final_norm: Option<&'static str>,
    pub mlm: MlmNames,
    pub classifier: ClassifierNames,
    /// ModernBERT's `head` (dense, LayerNorm) at every token before the token classifier and the span head.
    pub token_head: Option<TokenHeadNames>,
    /// Per-token classification (NER): one Linear onto the labels.
    pub token_classifier: &'static str,
    /// Extractive QA: one Linear onto the start and end logits.
    pub qa_outputs: &'static str,
}

/// DeBERTa's table of relative position embeddings, shared by every layer.
pub struct RelEmbeddingNames {
    pub table: &'static str,
    pub norm: &'static str,
}

/// ModernBERT's `ModernBertPredictionHead` under its task heads.
pub struct TokenHeadNames {
    pub dense: &'static str,
    pub norm: &'static str,
}

/// The masked-LM head: transform, LayerNorm, decoder onto the vocabulary.
pub struct MlmNames {
    pub dense: &'static str,
    pub norm: &'static str,
    /// `None`: always the word embeddings (DeBERTa's `lm_predictions`).
    pub decoder: Option<&'static str>,
    /// The decoder's bias under each name it has had, newest first.
    pub bias: [&'static str; 2],
    /// `None`: the config's `head_act`.
    pub act: Option<HiddenAct>,
}

/// The sequence classifier on the pooled tokens: a dense layer and its activation (and ModernBERT's
/// LayerNorm), then the projection onto the labels.
pub struct ClassifierNames {
    /// With the encoder's prefix (BERT's pooler belongs to the encoder).
    pub dense: &'static str,
    pub pooler_in_encoder: bool,
    /// `None`: the config's `pooler_act`.
    pub act: Option<PoolerAct>,
    pub norm: Option<&'static str>,
    pub out: &'static str,
}

const BERT: Layout = Layout {
    encoder: "bert.",
    word_embeddings: "embeddings.word_embeddings",
    position_embeddings: Some("embeddings.position_embeddings"),
    token_type_embeddings: Some("embeddings.token_type_embeddings"),
    embeddings_norm: "embeddings.LayerNorm",
    embeddings_project: None,
    layers: "encoder.layer",
    relative_attention_bias: None,
    rel_embeddings: None,
    qkv: &[
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ],
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
    final_norm: None,
    mlm: MlmNames {
        dense: "cls.predictions.transform.dense",
        norm: "cls.predictions.transform.LayerNorm",
        decoder: Some("cls.predictions.decoder.weight"),
        // `transformers` applies the decoder's own bias; older checkpoints carry only the (then tied) other.
        bias: ["cls.predictions.decoder.bias", "cls.predictions.bias"],
        act: None,
    },
    classifier: ClassifierNames {
        dense: "pooler.dense",
        pooler_in_encoder: true,
        act: Some(PoolerAct::Tanh),
        norm: None,
        out: "classifier",
    },
    token_head: None,
    token_classifier: "classifier",
    qa_outputs: "qa_outputs",
};

const ROBERTA: Layout = Layout {
    encoder: "roberta.",
    mlm: MlmNames {
        dense: "lm_head.dense",
        norm: "lm_head.layer_norm",
        decoder: Some("lm_head.decoder.weight"),
        bias: ["lm_head.decoder.bias", "lm_head.bias"],
        // `RobertaLMHead` calls `gelu` whatever `hidden_act` says.
        act: Some(HiddenAct::Gelu),
    },
    classifier: ClassifierNames {
        dense: "classifier.dense",
        pooler_in_encoder: false,
        act: Some(PoolerAct::Tanh),
        norm: None,
        out: "classifier.out_proj",
    },
    ..BERT
};

const DISTILBERT: Layout = Layout {
    encoder: "distilbert.",
    word_embeddings: "embeddings.word_embeddings",
    position_embeddings: Some("embeddings.position_embeddings"),
    token_type_embeddings: None,
    embeddings_norm: "embeddings.LayerNorm",
    embeddings_project: None,
    layers: "transformer.layer",
    relative_attention_bias: None,
    rel_embeddings: None,
    qkv: &["attention.q_lin", "attention.k_lin", "attention.v_lin"],
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
    final_norm: None,
    mlm: MlmNames {
        dense: "vocab_transform",
        norm: "vocab_layer_norm",
        decoder: Some("vocab_projector.weight"),
        bias: ["vocab_projector.bias", "vocab_projector.bias"],
        act: None,
    },
    classifier: ClassifierNames {
        dense: "pre_classifier",
        pooler_in_encoder: false,
        act: Some(PoolerAct::Act(HiddenAct::Relu)),
        norm: None,
        out: "classifier",
    },
    token_head: None,
    token_classifier: "classifier",
    qa_outputs: "qa_outputs",
};

const ALBERT: Layout = Layout {
    encoder: "albert.",
    embeddings_project: Some("encoder.embedding_hidden_mapping_in"),
    layers: "encoder.albert_layer_groups",
    qkv: &[
        "albert_layers.0.attention.query",
        "albert_layers.0.attention.key",
        "albert_layers.0.attention.value",
    ],
    attention_output: "albert_layers.0.attention.dense",
    attention_norm: "albert_layers.0.attention.LayerNorm",
    intermediate: "albert_layers.0.ffn",
    output: "albert_layers.0.ffn_output",
    output_norm: "albert_layers.0.full_layer_layer_norm",
    mlm: MlmNames {
        dense: "predictions.dense",
        norm: "predictions.LayerNorm",
        decoder: Some("predictions.decoder.weight"),
        bias: ["predictions.decoder.bias", "predictions.bias"],
        act: None,
    },
    classifier: ClassifierNames {
        dense: "pooler",
        pooler_in_encoder: true,
        act: Some(PoolerAct::Tanh),
        norm: None,
        out: "classifier",
    },
    ..BERT
};

const ELECTRA: Layout = Layout {
    encoder: "electra.",
    embeddings_project: Some("embeddings_project"),
    mlm: MlmNames {
        dense: "generator_predictions.dense",
        norm: "generator_predictions.LayerNorm",
        decoder: Some("generator_lm_head.weight"),
        bias: ["generator_lm_head.bias", "generator_lm_head.bias"],
        // `ElectraGeneratorPredictions` calls `gelu` whatever `hidden_act` says.
        act: Some(HiddenAct::Gelu),
    },
    classifier: ClassifierNames {
        dense: "classifier.dense",
        pooler_in_encoder: false,
        act: Some(PoolerAct::Act(HiddenAct::Gelu)),
        norm: None,
        out: "classifier.out_proj",
    },
    ..BERT
};

const MPNET: Layout = Layout {
    encoder: "mpnet.",
    token_type_embeddings: None,
    relative_attention_bias: Some("encoder.relative_attention_bias"),
    qkv: &["attention.attn.q", "attention.attn.k", "attention.attn.v"],
    attention_output: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    ..ROBERTA
};

/// ModernBERT's `head` (`ModernBertPredictionHead`): the same module under its decoder, its classifier and
/// its token heads.
const MODERNBERT_HEAD: TokenHeadNames = TokenHeadNames {
    dense: "head.dense",
    norm: "head.norm",
};

const MODERNBERT: Layout = Layout {
    encoder: "model.",
    word_embeddings: "embeddings.tok_embeddings",
    position_embeddings: None,
    token_type_embeddings: None,
    embeddings_norm: "embeddings.norm",
    embeddings_project: None,
    layers: "layers",
    relative_attention_bias: None,
    rel_embeddings: None,
    qkv: &["attn.Wqkv"],
    attention_output: "attn.Wo",
    attention_norm: "attn_norm",
    intermediate: "mlp.Wi",
    output: "mlp.Wo",
    output_norm: "mlp_norm",
    final_norm: Some("final_norm"),
    mlm: MlmNames {
        dense: MODERNBERT_HEAD.dense,
        norm: MODERNBERT_HEAD.norm,
        decoder: Some("decoder.weight"),
        bias: ["decoder.bias", "decoder.bias"],
        act: None,
    },
    classifier: ClassifierNames {
        dense: MODERNBERT_HEAD.dense,
        pooler_in_encoder: false,
        act: None,
        norm: Some(MODERNBERT_HEAD.norm),
        out: "classifier",
    },
    token_head: Some(MODERNBERT_HEAD),
    token_classifier: "classifier",
    qa_outputs: "classifier",
};

const DEBERTA_V2: Layout = Layout {
    encoder: "deberta.",
    rel_embeddings: Some(RelEmbeddingNames {
        table: "encoder.rel_embeddings",
        norm: "encoder.LayerNorm",
    }),
    qkv: &[
        "attention.self.query_proj",
        "attention.self.key_proj",
        "attention.self.value_proj",
    ],
    // `ContextPooler`, outside the encoder; its activation is the config's `pooler_hidden_act`.
    classifier: ClassifierNames {
        dense: "pooler.dense",
        pooler_in_encoder: false,
        act: None,
        norm: None,
        out: "classifier",
    },
    // The masked LM's head is BERT's with `legacy` (transformers' default); see `mlm_of`.
    ..BERT
};

/// DeBERTa's masked-LM head where the config says `legacy: false`: the original DeBERTa code's, which the
/// Hub's v3 checkpoints carry.
const DEBERTA_V2_LM_PREDICTIONS: MlmNames = MlmNames {
    dense: "lm_predictions.lm_head.dense",
    norm: "lm_predictions.lm_head.LayerNorm",
    decoder: None,
    bias: ["lm_predictions.lm_head.bias", "lm_predictions.lm_head.bias"],
    act: None,
};

impl Layout {
    /// The masked-LM head's names for this checkpoint: the family's, or DeBERTa's other head.
    pub fn mlm_of(config: &BertConfig) -> &'static MlmNames {
        match (config.architecture, config.legacy_mlm_head) {
            (Architecture::DebertaV2, false) => &DEBERTA_V2_LM_PREDICTIONS,
            (architecture, _) => &Layout::of(architecture).mlm,
        }
    }

    pub fn of(architecture: Architecture) -> &'static Layout {
        match architecture {
            Architecture::Bert => &BERT,
            // XLM-R is RoBERTa's code with another vocabulary; its checkpoints say `roberta.` too.
            Architecture::Roberta | Architecture::XlmRoberta => &ROBERTA,
            Architecture::DistilBert => &DISTILBERT,
            Architecture::Albert => &ALBERT,
            Architecture::Electra => &ELECTRA,
            Architecture::Mpnet => &MPNET,
            Architecture::ModernBert => &MODERNBERT,
            Architecture::DebertaV2 => &DEBERTA_V2,
        }
    }
}
