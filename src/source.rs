//! A model's files in Hugging Face layout: `config.json`, a tokenizer (`tokenizer.json`, or `vocab.txt`
//! with an optional `tokenizer_config.json`) and weights (`model.safetensors`, or an index and shards).

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::Checkpoint;

pub enum TokenizerFiles {
    /// `tokenizer.json`.
    Json(Vec<u8>),
    /// `vocab.txt` and, if present, `tokenizer_config.json`.
    Vocab {
        vocab: Vec<u8>,
        config: Option<String>,
    },
}

pub struct ModelFiles {
    pub config: BertConfig,
    pub tokenizer: Tokenizer,
    pub checkpoint: Checkpoint,
}

impl ModelFiles {
    /// Parses and cross-checks the parts; the tokenizer truncates to the model's positions.
    pub fn new(
        config_json: &str,
        tokenizer: TokenizerFiles,
        checkpoint: Checkpoint,
    ) -> Result<Self> {
        let config = BertConfig::from_hf_json(config_json)?;
        let max_len = config.max_position_embeddings;
        let tokenizer = match tokenizer {
            TokenizerFiles::Json(json) => Tokenizer::from_tokenizer_json(&json, max_len)?,
            TokenizerFiles::Vocab { vocab, config } => {
                Tokenizer::from_vocab(&vocab, config.as_deref(), max_len)?
            }
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} tokens but config.json's vocab_size is {}: they belong to different models",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        Ok(Self {
            config,
            tokenizer,
            checkpoint,
        })
    }

    /// Reads a folder in Hugging Face layout.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let read = |name: &str| std::fs::read(dir.join(name));
        let must = |name: &str| {
            read(name).map_err(|e| Error::Io(format!("{}: {e}", dir.join(name).display())))
        };
        let text = |bytes: Vec<u8>, name: &str| {
            String::from_utf8(bytes).map_err(|_| Error::Io(format!("{name} is not UTF-8 text")))
        };
        let config = text(must("config.json")?, "config.json")?;
        let tokenizer = match read("tokenizer.json") {
            Ok(json) => TokenizerFiles::Json(json),
            Err(_) => TokenizerFiles::Vocab {
                vocab: must("vocab.txt")
                    .map_err(|e| Error::Io(format!("no tokenizer.json, and {e}")))?,
                config: read("tokenizer_config.json")
                    .ok()
                    .map(|b| text(b, "tokenizer_config.json"))
                    .transpose()?,
            },
        };
        let checkpoint = match read("model.safetensors") {
            Ok(bytes) => Checkpoint::from_safetensors(bytes)?,
            Err(_) => {
                let index = text(
                    must("model.safetensors.index.json")
                        .map_err(|e| Error::Io(format!("no model.safetensors, and {e}")))?,
                    "model.safetensors.index.json",
                )?;
                let shards = Checkpoint::shard_names(&index)?
                    .into_iter()
                    .map(|name| Ok((name.clone(), must(&name)?)))
                    .collect::<Result<Vec<_>>>()?;
                Checkpoint::from_shards(&index, shards)?
            }
        };
        Self::new(&config, tokenizer, checkpoint)
    }
}
