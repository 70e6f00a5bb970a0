//! Loading Hugging Face checkpoints (`model.safetensors`, or shards with `model.safetensors.index.json`)
//! into the burn modules. Bytes in, so a browser can hand over what it fetched.
//!
//! Every tensor is checked by name, shape and dtype before it reaches the device; F16 and BF16 are
//! widened to f32. PyTorch's `Linear.weight` is `[out, in]`; burn's is `[in, out]`, so it is transposed here.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{Error, Result};
use crate::model::BertModel;
use crate::model::attention::BertAttention;
use crate::model::config::BertConfig;
use crate::model::embeddings::BertEmbeddings;
use crate::model::heads::{BertForMaskedLM, MlmHead};
use crate::model::layer::BertLayer;

struct Shard {
    name: String,
    bytes: Vec<u8>,
    header_len: usize,
    metadata: Metadata,
}

/// A parsed checkpoint: one or more safetensors buffers.
pub struct Checkpoint {
    shards: Vec<Shard>,
}

impl Checkpoint {
    /// One `model.safetensors` file.
    pub fn from_safetensors(bytes: Vec<u8>) -> Result<Self> {
        Ok(Self {
            shards: vec![parse_shard("model.safetensors".into(), bytes)?],
        })
    }

    /// The shard file names a `model.safetensors.index.json` refers to, in order.
    pub fn shard_names(index_json: &str) -> Result<Vec<String>> {
        let files: BTreeSet<String> = weight_map(index_json)?.into_values().collect();
        for file in &files {
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(Error::Weights(format!(
                    "index names an unsafe shard path {file:?}"
                )));
            }
        }
        Ok(files.into_iter().collect())
    }

    /// Sharded checkpoint: the index and each shard's `(file name, bytes)`. Each tensor must sit in
    /// the shard the index names.
    pub fn from_shards(index_json: &str, shards: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let map = weight_map(index_json)?;
        let shards = shards
            .into_iter()
            .map(|(name, bytes)| parse_shard(name, bytes))
            .collect::<Result<Vec<_>>>()?;
        for (tensor, file) in &map {
            let shard = shards.iter().find(|s| &s.name == file).ok_or_else(|| {
                Error::Weights(format!(
                    "shard {file} (holding `{tensor}`) was not provided"
                ))
            })?;
            if shard.metadata.info(tensor).is_none() {
                return Err(Error::Weights(format!(
                    "index puts `{tensor}` in {file}, but that shard lacks it"
                )));
            }
        }
        Ok(Self { shards })
    }

    /// The whole checkpoint as one safetensors file with every F32 and BF16 tensor stored as F16 (half
    /// the bytes; others as they are). A value past f16's range is an error naming its tensor.
    pub fn to_f16(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for shard in &self.shards {
            let mut names: Vec<String> = shard.metadata.tensors().into_keys().collect();
            names.sort();
            for name in &names {
                let info = shard.metadata.info(name).expect("listed by the metadata");
                let start = 8 + shard.header_len;
                let bytes = &shard.bytes[start + info.data_offsets.0..start + info.data_offsets.1];
                let (dtype, bytes) = match info.dtype {
                    Dtype::F32 | Dtype::BF16 => {
                        let values = self.read(name, &info.shape)?;
                        if let Some(v) = values.iter().find(|v| v.abs() > f32::from(half::f16::MAX))
                        {
                            return Err(Error::Weights(format!(
                                "tensor `{name}` holds {v}, past f16's range: keep it in f32"
                            )));
                        }
                        let bytes = values
                            .iter()
                            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                            .collect();
                        (Dtype::F16, bytes)
                    }
                    other => (other, bytes.to_vec()),
                };
                tensors.push((name.clone(), dtype, info.shape.clone(), bytes));
            }
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|view| (name.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Weights(e.to_string()))?;
        let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))
    }

    /// Bytes of every file, headers included.
    pub fn byte_len(&self) -> usize {
        self.shards.iter().map(|s| s.bytes.len()).sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shards.iter().any(|s| s.metadata.info(name).is_some())
    }

    /// The tensor `name` as f32 values, after checking it has `shape`.
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (shard, info) = self
            .shards
            .iter()
            .find_map(|s| s.metadata.info(name).map(|info| (s, info)))
            .ok_or_else(|| {
                Error::Weights(format!("tensor `{name}` is missing from the checkpoint"))
            })?;
        if info.shape != shape {
            return Err(Error::Weights(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        let start = 8 + shard.header_len;
        let bytes = &shard.bytes[start + info.data_offsets.0..start + info.data_offsets.1];
        let values: Vec<f32> = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Weights(format!(
                    "tensor `{name}` has dtype {other:?}, expected F32, F16 or BF16"
                )));
            }
        };
        // One NaN or infinity makes every output NaN: refuse the checkpoint, not each answer.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Weights(format!(
                "tensor `{name}` holds {} at index {i}: the checkpoint is damaged",
                values[i]
            )));
        }
        Ok(values)
    }
}

fn parse_shard(name: String, bytes: Vec<u8>) -> Result<Shard> {
    // `read_metadata` bounds the header and checks every offset against the buffer: no over-read,
    // no allocation sized by untrusted input.
    let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::Weights(format!(
            "{name} is not a valid safetensors file (truncated or corrupt?): {e}"
        ))
    })?;
    Ok(Shard {
        name,
        bytes,
        header_len,
        metadata,
    })
}

fn weight_map(index_json: &str) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    serde_json::from_str::<Index>(index_json)
        .map(|i| i.weight_map)
        .map_err(|e| Error::Weights(format!("model.safetensors.index.json: {e}")))
}

/// Hugging Face's names of the three projections that [`BertAttention::qkv`] holds side by side.
const QKV: [&str; 3] = ["query", "key", "value"];

/// Builds modules from checkpoint tensors, with Hugging Face's key names.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    config: &'a BertConfig,
    device: &'a Device,
}

impl Loader<'_> {
    fn tensor1(&self, name: &str, len: usize) -> Result<Param<Tensor<1>>> {
        let values = self.checkpoint.read(name, &[len])?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [len]),
            self.device,
        )))
    }

    fn tensor2(&self, name: &str, rows: usize, cols: usize) -> Result<Param<Tensor<2>>> {
        let values = self.checkpoint.read(name, &[rows, cols])?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [rows, cols]),
            self.device,
        )))
    }

    fn linear(&self, prefix: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        self.linears(&[prefix], d_in, d_out)
    }

    /// Several Linear layers of the same shape read as one, their outputs side by side (`[in, n × out]`).
    fn linears(&self, prefixes: &[&str], d_in: usize, d_out: usize) -> Result<Linear> {
        // Every part read (and its shape checked against the file) before the sizes from config.json
        // allocate anything.
        let parts = prefixes
            .iter()
            .map(|prefix| {
                let weight = self
                    .checkpoint
                    .read(&format!("{prefix}.weight"), &[d_out, d_in])?;
                let bias = self.checkpoint.read(&format!("{prefix}.bias"), &[d_out])?;
                Ok((weight, bias))
            })
            .collect::<Result<Vec<_>>>()?;
        let width = prefixes.len() * d_out;
        let mut weight = vec![0.0f32; d_in * width];
        let mut bias = Vec::with_capacity(width);
        for (n, (part, part_bias)) in parts.into_iter().enumerate() {
            for (o, row) in part.chunks_exact(d_in).enumerate() {
                for (i, w) in row.iter().enumerate() {
                    weight[i * width + n * d_out + o] = *w;
                }
            }
            bias.extend(part_bias);
        }
        Ok(Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(weight, [d_in, width]),
                self.device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(bias, [width]),
                self.device,
            ))),
        })
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        let hidden = self.config.hidden_size;
        // Read first: `init` allocates `hidden_size` from config.json, checked against the file here.
        let gamma = self.tensor1(&format!("{prefix}.weight"), hidden)?;
        let beta = self.tensor1(&format!("{prefix}.bias"), hidden)?;
        // `init` only sets epsilon here; its ones/zeros are replaced at once.
        let mut norm = LayerNormConfig::new(hidden)
            .with_epsilon(self.config.layer_norm_eps)
            .init(self.device);
        norm.gamma = gamma;
        norm.beta = Some(beta);
        Ok(norm)
    }

    fn embedding(&self, name: &str, rows: usize) -> Result<Embedding> {
        Ok(Embedding {
            weight: self.tensor2(name, rows, self.config.hidden_size)?,
        })
    }

    fn attention(&self, prefix: &str) -> Result<BertAttention> {
        let h = self.config.hidden_size;
        Ok(BertAttention {
            qkv: self.linears(
                &QKV.map(|name| format!("{prefix}.self.{name}"))
                    .each_ref()
                    .map(String::as_str),
                h,
                h,
            )?,
            dense: self.linear(&format!("{prefix}.output.dense"), h, h)?,
            layer_norm: self.layer_norm(&format!("{prefix}.output.LayerNorm"))?,
            num_heads: self.config.num_attention_heads,
            layer_norm_eps: self.config.layer_norm_eps,
        })
    }

    fn layer(&self, prefix: &str) -> Result<BertLayer> {
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        Ok(BertLayer {
            attention: self.attention(&format!("{prefix}.attention"))?,
            intermediate: self.linear(&format!("{prefix}.intermediate.dense"), h, i)?,
            output: self.linear(&format!("{prefix}.output.dense"), i, h)?,
            layer_norm: self.layer_norm(&format!("{prefix}.output.LayerNorm"))?,
            layer_norm_eps: self.config.layer_norm_eps,
            hidden_act: self.config.hidden_act,
        })
    }

    /// `prefix` is `""` for a `BertModel` checkpoint, `"bert."` inside task models.
    fn bert(&self, prefix: &str) -> Result<BertModel> {
        let c = self.config;
        let embeddings = BertEmbeddings {
            word_embeddings: self.embedding(
                &format!("{prefix}embeddings.word_embeddings.weight"),
                c.vocab_size,
            )?,
            position_embeddings: self.embedding(
                &format!("{prefix}embeddings.position_embeddings.weight"),
                c.max_position_embeddings,
            )?,
            token_type_embeddings: self.embedding(
                &format!("{prefix}embeddings.token_type_embeddings.weight"),
                c.type_vocab_size,
            )?,
            layer_norm: self.layer_norm(&format!("{prefix}embeddings.LayerNorm"))?,
            layer_norm_eps: c.layer_norm_eps,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|n| self.layer(&format!("{prefix}encoder.layer.{n}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel { embeddings, layers })
    }

    fn bert_prefix(&self) -> &'static str {
        if self
            .checkpoint
            .contains("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        }
    }

    fn mlm_head(&self) -> Result<MlmHead> {
        let c = self.config;
        let decoder_name = "cls.predictions.decoder.weight";
        let decoder = match self.checkpoint.contains(decoder_name) {
            true => Some(self.tensor2(decoder_name, c.vocab_size, c.hidden_size)?),
            false => None,
        };
        // The decoder's own bias is what `transformers` applies; older checkpoints only carry the
        // (then tied) `cls.predictions.bias`.
        let bias_name = match self.checkpoint.contains("cls.predictions.decoder.bias") {
            true => "cls.predictions.decoder.bias",
            false => "cls.predictions.bias",
        };
        Ok(MlmHead {
            dense: self.linear(
                "cls.predictions.transform.dense",
                c.hidden_size,
                c.hidden_size,
            )?,
            layer_norm: self.layer_norm("cls.predictions.transform.LayerNorm")?,
            decoder,
            bias: self.tensor1(bias_name, c.vocab_size)?,
            layer_norm_eps: c.layer_norm_eps,
            hidden_act: c.hidden_act,
        })
    }
}

/// The encoder from a `BertModel` or any `Bert*` task checkpoint (task heads are ignored).
pub fn load_bert(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertModel> {
    let loader = Loader {
        checkpoint,
        config,
        device,
    };
    loader.bert(loader.bert_prefix())
}

/// A `BertForMaskedLM` checkpoint; the decoder is tied to the word embeddings unless the checkpoint
/// carries `cls.predictions.decoder.weight`.
pub fn load_bert_for_masked_lm(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForMaskedLM> {
    let loader = Loader {
        checkpoint,
        config,
        device,
    };
    Ok(BertForMaskedLM {
        bert: loader.bert(loader.bert_prefix())?,
        cls: loader.mlm_head()?,
    })
}

/// Which tensors [`save_bert_for_masked_lm`] writes, and in what precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub dtype: Dtype,
    /// `false` writes a delta against the base encoder: everything but the (frozen) word embeddings.
    pub word_embeddings: bool,
}

/// Writes a `BertForMaskedLM` under Hugging Face's names (`bert.…`, `cls.predictions.…`): the inverse
/// of [`load_bert_for_masked_lm`]. Linear weights go back to PyTorch's `[out, in]`.
pub fn save_bert_for_masked_lm(model: &BertForMaskedLM, options: SaveOptions) -> Result<Vec<u8>> {
    let mut saver = Saver {
        tensors: Vec::new(),
        dtype: options.dtype,
    };
    saver.bert(&model.bert, options.word_embeddings);
    saver.mlm_head(&model.cls);
    let views: Vec<(String, safetensors::tensor::TensorView)> = saver
        .tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(options.dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Weights(e.to_string()))?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))
}

/// Collects `(name, shape, little-endian bytes)` mirroring [`Loader`]'s names.
struct Saver {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    dtype: Dtype,
}

impl Saver {
    fn tensor<const D: usize>(&mut self, name: String, tensor: Tensor<D>) {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let bytes = match self.dtype {
            Dtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.tensors.push((name, shape, bytes));
    }

    fn linear(&mut self, prefix: &str, linear: &Linear) {
        self.linears(&[prefix.to_string()], linear);
    }

    /// The inverse of [`Loader::linears`]: one Linear per name, from equal slices of the outputs.
    fn linears(&mut self, prefixes: &[String], linear: &Linear) {
        let d_out = linear.weight.dims()[1] / prefixes.len();
        for (n, prefix) in prefixes.iter().enumerate() {
            let start = n * d_out;
            let weight = linear.weight.val().narrow(1, start, d_out);
            self.tensor(format!("{prefix}.weight"), weight.transpose());
            if let Some(bias) = &linear.bias {
                self.tensor(format!("{prefix}.bias"), bias.val().narrow(0, start, d_out));
            }
        }
    }

    fn layer_norm(&mut self, prefix: &str, norm: &LayerNorm) {
        self.tensor(format!("{prefix}.weight"), norm.gamma.val());
        if let Some(beta) = &norm.beta {
            self.tensor(format!("{prefix}.bias"), beta.val());
        }
    }

    fn bert(&mut self, bert: &BertModel, word_embeddings: bool) {
        let e = &bert.embeddings;
        if word_embeddings {
            self.tensor(
                "bert.embeddings.word_embeddings.weight".into(),
                e.word_embeddings.weight.val(),
            );
        }
        self.tensor(
            "bert.embeddings.position_embeddings.weight".into(),
            e.position_embeddings.weight.val(),
        );
        self.tensor(
            "bert.embeddings.token_type_embeddings.weight".into(),
            e.token_type_embeddings.weight.val(),
        );
        self.layer_norm("bert.embeddings.LayerNorm", &e.layer_norm);
        for (n, layer) in bert.layers.iter().enumerate() {
            let prefix = format!("bert.encoder.layer.{n}");
            let a = &layer.attention;
            self.linears(
                &QKV.map(|name| format!("{prefix}.attention.self.{name}")),
                &a.qkv,
            );
            self.linear(&format!("{prefix}.attention.output.dense"), &a.dense);
            self.layer_norm(
                &format!("{prefix}.attention.output.LayerNorm"),
                &a.layer_norm,
            );
            self.linear(&format!("{prefix}.intermediate.dense"), &layer.intermediate);
            self.linear(&format!("{prefix}.output.dense"), &layer.output);
            self.layer_norm(&format!("{prefix}.output.LayerNorm"), &layer.layer_norm);
        }
    }

    fn mlm_head(&mut self, head: &MlmHead) {
        self.linear("cls.predictions.transform.dense", &head.dense);
        self.layer_norm("cls.predictions.transform.LayerNorm", &head.layer_norm);
        if let Some(decoder) = &head.decoder {
            self.tensor("cls.predictions.decoder.weight".into(), decoder.val());
        }
        self.tensor("cls.predictions.bias".into(), head.bias.val());
    }
}
