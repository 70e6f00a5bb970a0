//! A model's files in Hugging Face layout: `config.json`, a tokenizer (`tokenizer.json`, or `vocab.txt`
//! with an optional `tokenizer_config.json`) and weights (`model.safetensors`, or an index and shards).

use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::model::config::BertConfig;
use crate::model::heads::{Pooling, Sentence};
use crate::tokenizer::Tokenizer;

pub enum TokenizerFiles {
    /// `tokenizer.json`.
    Json(Vec<u8>),
    /// `vocab.txt` and, if present, `tokenizer_config.json`.
    Vocab {
        vocab: Vec<u8>,
        config: Option<String>,
    },
}

/// Which weights to load from a model directory: `model.safetensors` (or its index and shards) as the
/// model was published, or a variant beside it written by `webbert quantize`, which refuses one whose
/// embeddings stray from the original's: `model.fp16.safetensors` (half the download) or
/// `model.q8.safetensors` (int8 matrices with per-row scales, a quarter), each widened to f32 at load.
/// `Auto` takes the smallest the directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsDtype {
    Fp32,
    Fp16,
    Q8,
    #[default]
    Auto,
}

/// The file name of the f16 variant.
pub const FP16_WEIGHTS: &str = "model.fp16.safetensors";
/// The file name of the int8 variant.
pub const Q8_WEIGHTS: &str = "model.q8.safetensors";

impl WeightsDtype {
    /// Single-file weights to look for, in order of preference; `Fp32` and `Auto` then try an index.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            WeightsDtype::Fp32 => &["model.safetensors"],
            WeightsDtype::Fp16 => &[FP16_WEIGHTS],
            WeightsDtype::Q8 => &[Q8_WEIGHTS],
            WeightsDtype::Auto => &[Q8_WEIGHTS, FP16_WEIGHTS, "model.safetensors"],
        }
    }

    /// A variant `webbert quantize` writes (no shards).
    pub fn is_variant(self) -> bool {
        matches!(self, WeightsDtype::Fp16 | WeightsDtype::Q8)
    }
}

impl std::str::FromStr for WeightsDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(WeightsDtype::Fp32),
            "fp16" => Ok(WeightsDtype::Fp16),
            "q8" => Ok(WeightsDtype::Q8),
            "auto" => Ok(WeightsDtype::Auto),
            other => Err(Error::Input(format!(
                "dtype must be \"fp32\", \"fp16\", \"q8\" or \"auto\", not {other:?}"
            ))),
        }
    }
}

pub struct ModelFiles {
    pub config: BertConfig,
    pub tokenizer: Tokenizer,
    pub checkpoint: Checkpoint,
    /// From sentence-transformers' `modules.json` and its Pooling module's `config.json`, if present.
    pub sentence: Sentence,
}

/// sentence-transformers' `modules.json`: the folder of its Pooling module (its `config.json` says which
/// pooling), and whether a Normalize module follows.
pub fn sentence_modules(modules_json: &[u8]) -> Result<(Option<String>, bool)> {
    #[derive(serde::Deserialize)]
    struct Module {
        #[serde(default)]
        path: String,
        #[serde(rename = "type")]
        kind: String,
    }
    let modules: Vec<Module> = serde_json::from_slice(modules_json)
        .map_err(|e| Error::Config(format!("modules.json: {e}")))?;
    let mut pooling = None;
    let mut normalize = false;
    for module in modules {
        match module.kind.rsplit('.').next() {
            Some("Pooling") => {
                let path = module.path.trim_end_matches('/');
                if path.is_empty()
                    || path.starts_with(['/', '\\', '.'])
                    || path.contains("..")
                    || path.contains('\\')
                {
                    return Err(Error::Config(format!(
                        "modules.json names an unsafe Pooling path {:?}",
                        module.path
                    )));
                }
                pooling = Some(path.to_string());
            }
            Some("Normalize") => normalize = true,
            _ => {}
        }
    }
    Ok((pooling, normalize))
}

/// sentence-transformers' settings of the Transformer module: the length it cuts texts at.
pub const SENTENCE_CONFIG: &str = "sentence_bert_config.json";

fn max_seq_length(config_json: &[u8]) -> Result<Option<usize>> {
    let value: serde_json::Value = serde_json::from_slice(config_json)
        .map_err(|e| Error::Config(format!("{SENTENCE_CONFIG}: {e}")))?;
    match &value["max_seq_length"] {
        serde_json::Value::Null => Ok(None),
        v => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| Some(n as usize))
            .ok_or_else(|| {
                Error::Config(format!(
                    "{SENTENCE_CONFIG}: `max_seq_length` must be a positive integer, found {v}"
                ))
            }),
    }
}

/// The pooling a Pooling module's `config.json` asks for: `[CLS]` or the mean (others are refused).
fn pooling_mode(config_json: &[u8], name: &str) -> Result<Pooling> {
    let value: serde_json::Value =
        serde_json::from_slice(config_json).map_err(|e| Error::Config(format!("{name}: {e}")))?;
    let on = |mode: &str| value[format!("pooling_mode_{mode}")].as_bool() == Some(true);
    let modes = [
        "cls_token",
        "mean_tokens",
        "max_tokens",
        "mean_sqrt_len_tokens",
        "weightedmean_tokens",
        "lasttoken",
    ];
    match modes.iter().filter(|m| on(m)).collect::<Vec<_>>()[..] {
        [&"cls_token"] => Ok(Pooling::Cls),
        [&"mean_tokens"] => Ok(Pooling::Mean),
        ref other => Err(Error::Config(format!(
            "{name} asks for pooling {other:?}; webbert pools by cls_token or mean_tokens alone"
        ))),
    }
}

impl ModelFiles {
    /// Parses and cross-checks the parts; the tokenizer truncates to the model's positions.
    pub fn new(
        config_json: &str,
        tokenizer: TokenizerFiles,
        checkpoint: Checkpoint,
    ) -> Result<Self> {
        let config = BertConfig::from_hf_json(config_json)?;
        let max_len = config.max_len();
        let mut tokenizer = match tokenizer {
            TokenizerFiles::Json(json) => Tokenizer::from_tokenizer_json(&json, max_len)?,
            TokenizerFiles::Vocab { vocab, config } => {
                Tokenizer::from_vocab(&vocab, config.as_deref(), max_len)?
            }
        };
        if config.type_vocab_size <= 1 {
            tokenizer = tokenizer.without_segments();
        }
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} tokens but config.json's vocab_size is {}: they belong to different models",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        // Ids, not the count, index the embeddings (a vocab.txt with a repeated line skips one).
        if let Some((token, id)) = tokenizer.largest_id()
            && id as usize >= config.vocab_size
        {
            return Err(Error::Tokenizer(format!(
                "the tokenizer gives {token:?} the id {id}, past config.json's vocab_size of {}",
                config.vocab_size
            )));
        }
        Ok(Self {
            config,
            tokenizer,
            checkpoint,
            sentence: Sentence::default(),
        })
    }

    /// Assembles a model from files looked up by name (`None`: no such file), in Hugging Face's order of
    /// preference: `tokenizer.json` over `vocab.txt`, `model.safetensors` over an index and its shards.
    pub fn from_lookup(
        dtype: WeightsDtype,
        mut file: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
    ) -> Result<Self> {
        let config =
            file("config.json")?.ok_or_else(|| Error::Io("config.json is missing".into()))?;
        let config = text(config, "config.json")?;
        let tokenizer = match file("tokenizer.json")? {
            Some(json) => TokenizerFiles::Json(json),
            None => TokenizerFiles::Vocab {
                vocab: file("vocab.txt")?.ok_or_else(|| {
                    Error::Io("neither tokenizer.json nor vocab.txt is present".into())
                })?,
                config: file("tokenizer_config.json")?
                    .map(|b| text(b, "tokenizer_config.json"))
                    .transpose()?,
            },
        };
        let mut single = None;
        for name in dtype.files() {
            if let Some(bytes) = file(name)? {
                single = Some(bytes);
                break;
            }
        }
        let checkpoint = match single {
            Some(bytes) => Checkpoint::from_safetensors(bytes)?,
            None if dtype.is_variant() => {
                let (file, flag) = match dtype {
                    WeightsDtype::Q8 => (Q8_WEIGHTS, "q8"),
                    _ => (FP16_WEIGHTS, "fp16"),
                };
                return Err(Error::Io(format!(
                    "{file} is missing (`webbert quantize --dtype {flag}` writes it)"
                )));
            }
            None => {
                let index = file("model.safetensors.index.json")?.ok_or_else(|| {
                    Error::Io(
                        "neither model.safetensors nor model.safetensors.index.json is present"
                            .into(),
                    )
                })?;
                let index = text(index, "model.safetensors.index.json")?;
                let shards = Checkpoint::shard_names(&index)?
                    .into_iter()
                    .map(|name| {
                        Ok((
                            name.clone(),
                            file(&name)?.ok_or_else(|| Error::Io(format!("{name} is missing")))?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Checkpoint::from_shards(&index, shards)?
            }
        };
        let mut files = Self::new(&config, tokenizer, checkpoint)?;
        if let Some(modules) = file("modules.json")? {
            let (pooling, normalize) = sentence_modules(&modules)?;
            files.sentence.normalize = normalize;
            if let Some(path) = pooling {
                let name = format!("{path}/config.json");
                let config = file(&name)?.ok_or_else(|| Error::Io(format!("{name} is missing")))?;
                files.sentence.pooling = pooling_mode(&config, &name)?;
            }
            if let Some(config) = file(SENTENCE_CONFIG)? {
                files.sentence.max_seq_length = max_seq_length(&config)?;
            }
        }
        Ok(files)
    }

    /// Reads a folder in Hugging Face layout, its weights as published (`model.safetensors` or shards).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        Self::from_dir_as(dir, WeightsDtype::Fp32)
    }

    /// As [`from_dir`](Self::from_dir), with the weights `dtype` chooses.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir_as(dir: &std::path::Path, dtype: WeightsDtype) -> Result<Self> {
        Self::from_lookup(dtype, |name| read_optional(&dir.join(name))).map_err(|e| match e {
            Error::Io(msg) => Error::Io(format!("{}: {msg}", dir.display())),
            other => other,
        })
    }
}

/// A file's bytes, or `None` if there is no such file.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_optional(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(format!("{}: {e}", path.display()))),
    }
}

fn text(bytes: Vec<u8>, name: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Io(format!("{name} is not UTF-8 text")))
}
