//! Loading Hugging Face checkpoints (`model.safetensors`, or shards with `model.safetensors.index.json`)
//! into the burn modules. Bytes in, so a browser can hand over what it fetched.
//!
//! Every tensor is checked by name, shape and dtype before it reaches the device. F16 and BF16 are
//! widened to f32, but for the Linear weights that stay packed where a kernel reads them so (F16 and
//! int8 on a GPU, int8 on the browser's CPU path). PyTorch's `Linear.weight` is `[out, in]`; burn's is `[in, out]`, so it is transposed here.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::quantization::QuantScheme;
use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{Error, Result};
use crate::io::layout::Layout;
use crate::model::BertModel;
use crate::model::attention::BertAttention;
use crate::model::config::BertConfig;
use crate::model::disentangled::RelativeEmbeddings;
use crate::model::embeddings::BertEmbeddings;
use crate::model::heads::{
    BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, ClassificationHead, MlmHead, PoolerAct, TokenHead,
};
use crate::model::layer::BertLayer;
use crate::model::position_bias::RelativePositionBias;
use crate::model::rotary::RotaryEmbedding;
use crate::ops::linear::q8_scheme;

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
        self.converted(false)
    }

    /// As [`to_f16`](Self::to_f16), and every matrix of at least [`Q8_MIN_ELEMENTS`] values (the Linear
    /// weights, the embeddings) stored as I8, symmetric per block of [`Q8_BLOCK`] values of a row: block `b`
    /// of row `r` is `q · {name}_scale[r, b]`, the scale (F32) its largest magnitude over 127. A little over
    /// a quarter of the f32 bytes.
    pub fn to_q8(&self) -> Result<Vec<u8>> {
        self.converted(true)
    }

    fn converted(&self, q8: bool) -> Result<Vec<u8>> {
        let mut tensors = Vec::new();
        for shard in &self.shards {
            let mut names: Vec<String> = shard.metadata.tensors().into_keys().collect();
            names.sort();
            for name in &names {
                let info = shard.metadata.info(name).expect("listed by the metadata");
                let start = 8 + shard.header_len;
                let bytes = &shard.bytes[start + info.data_offsets.0..start + info.data_offsets.1];
                let elements: usize = info.shape.iter().product();
                let matrix = info.shape.len() == 2 && elements >= Q8_MIN_ELEMENTS;
                let (dtype, bytes) = match info.dtype {
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 if q8 && matrix => {
                        let values = self.read(name, &info.shape)?;
                        let (quantized, scales) = quantize_blocks(&values, info.shape[1]);
                        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                        tensors.push((
                            format!("{name}{Q8_SCALE}"),
                            Dtype::F32,
                            vec![info.shape[0], info.shape[1].div_ceil(Q8_BLOCK)],
                            scale_bytes,
                        ));
                        (Dtype::I8, quantized.iter().map(|q| *q as u8).collect())
                    }
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

    /// The dtype and bytes of tensor `name`, after checking it has `shape`.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(Dtype, &[u8])> {
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
        Ok((
            info.dtype,
            &shard.bytes[start + info.data_offsets.0..start + info.data_offsets.1],
        ))
    }

    /// An int8 matrix `name` of `shape` as it is stored, with its block scales (`[rows, columns /
    /// Q8_BLOCK]`); `None` if it is stored as floats, or its rows are not whole blocks.
    fn read_q8(&self, name: &str, shape: [usize; 2]) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
        let (dtype, bytes) = self.locate(name, &shape)?;
        if dtype != Dtype::I8 || !shape[1].is_multiple_of(Q8_BLOCK) {
            return Ok(None);
        }
        let scales = self.read(
            &format!("{name}{Q8_SCALE}"),
            &[shape[0], shape[1] / Q8_BLOCK],
        )?;
        Ok(Some((bytes.iter().map(|&q| q as i8).collect(), scales)))
    }

    /// An f16 matrix `name` of `shape` as it is stored; `None` if it is stored otherwise.
    fn read_f16(&self, name: &str, shape: [usize; 2]) -> Result<Option<Vec<half::f16>>> {
        let (dtype, bytes) = self.locate(name, &shape)?;
        if dtype != Dtype::F16 {
            return Ok(None);
        }
        let values: Vec<_> = bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
            .collect();
        finite(name, values.iter().map(|v| v.to_f32()))?;
        Ok(Some(values))
    }

    /// The tensor `name` as f32 values, after checking it has `shape`; int8 tensors times their row scales.
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.locate(name, shape)?;
        let values: Vec<f32> = match dtype {
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
            Dtype::I8 if shape.len() == 2 => {
                let blocks = shape[1].div_ceil(Q8_BLOCK);
                let scales = self.read(&format!("{name}{Q8_SCALE}"), &[shape[0], blocks])?;
                bytes
                    .chunks_exact(shape[1].max(1))
                    .zip(scales.chunks_exact(blocks.max(1)))
                    .flat_map(|(row, scales)| {
                        row.chunks(Q8_BLOCK).zip(scales).flat_map(|(block, scale)| {
                            block.iter().map(move |q| *q as i8 as f32 * scale)
                        })
                    })
                    .collect()
            }
            other => {
                return Err(Error::Weights(format!(
                    "tensor `{name}` has dtype {other:?}, expected F32, F16, BF16 (or I8 for a matrix)"
                )));
            }
        };
        finite(name, values.iter().copied())?;
        Ok(values)
    }
}

/// One NaN or infinity makes every output NaN: refuse the checkpoint, not each answer.
fn finite(name: &str, values: impl Iterator<Item = f32>) -> Result<()> {
    match values.enumerate().find(|(_, v)| !v.is_finite()) {
        Some((i, v)) => Err(Error::Weights(format!(
            "tensor `{name}` holds {v} at index {i}: the checkpoint is damaged"
        ))),
        None => Ok(()),
    }
}

/// Matrices this large or larger are stored as int8 in a q8 variant; smaller ones (biases, norms, MPNet's
/// position bias) cost little as f16.
pub const Q8_MIN_ELEMENTS: usize = 4096;

/// The suffix of an int8 matrix's scales (compressed-tensors' name for them).
pub const Q8_SCALE: &str = "_scale";

/// Values of a row that share one scale. Per row, all-MiniLM-L6-v2's embeddings fell to a cosine of 0.9966
/// (outliers stretch a whole row's scale); per 32 they stay above 0.999.
pub const Q8_BLOCK: usize = 32;

/// Symmetric int8 per block: each [`Q8_BLOCK`] values of a row of `columns` scaled so that their largest
/// magnitude is 127.
fn quantize_blocks(values: &[f32], columns: usize) -> (Vec<i8>, Vec<f32>) {
    let mut quantized = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / Q8_BLOCK + 1);
    for row in values.chunks_exact(columns.max(1)) {
        for block in row.chunks(Q8_BLOCK) {
            let largest = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            quantized.extend(block.iter().map(|v| (v / scale).round() as i8));
            scales.push(scale);
        }
    }
    (quantized, scales)
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

/// Where a model's tensors come from or go to. [`bert`] and the heads' walks name every tensor once
/// (through [`Layout`]), for both: each part is built from the checkpoint when loading ([`Loader`], `have`
/// is `None`), and written out and handed back when saving ([`Saver`], `have` is the model's own part).
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
    let mut embedding = |name: &str, rows, have: Option<&Embedding>| -> Result<Embedding> {
        let weight = t.tensor2(
            &format!("{prefix}{name}.weight"),
            [rows, width],
            have.map(|e| &e.weight),
        )?;
        Ok(Embedding { weight })
    };
    let word_embeddings = embedding(
        names.word_embeddings,
        c.vocab_size,
        e.map(|e| &e.word_embeddings),
    )?;
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

/// Builds modules from a checkpoint's tensors, each checked by name, shape and dtype.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    device: &'a Device,
}

impl Loader<'_> {
    fn param<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    /// How a q8 checkpoint's Linear weights of `width` outputs stay int8, if they do ([`q8_scheme`]): on
    /// the GPU, whose kernels unpack them (four columns to a word, so `width` a multiple of 4), and on
    /// the browser's CPU path, whose one thread multiplies them as they are. Otherwise they are widened
    /// to f32 here: natively on the CPU, where flex's f32 gemm on every core is faster, and for
    /// training.
    fn int8(&self, width: usize) -> Option<QuantScheme> {
        if self.device.is_autodiff() {
            None
        } else if *self.device == Device::flex() {
            cfg!(target_arch = "wasm32").then(|| q8_scheme(false))
        } else {
            width.is_multiple_of(4).then(|| q8_scheme(true))
        }
    }

    /// [`Tensors::linears`] from int8 parts, kept int8 in burn's block quantisation: `None` if a part is
    /// stored as floats. Blocks stay along `in` as the parts are transposed, scales with them.
    fn q8_linears(
        &self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Option<Linear>> {
        let width = prefixes.len() * d_out;
        let Some(scheme) = self.int8(width) else {
            return Ok(None);
        };
        let read = |name: &str| self.checkpoint.read_q8(name, [d_out, d_in]);
        let Some(parts) = stored_parts(prefixes, read)? else {
            return Ok(None);
        };
        let (weights, scales): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let biases = self.biases(prefixes, d_out, bias)?;
        let (weights, scales) = (
            side_by_side(&weights, d_in),
            side_by_side(&scales, d_in / Q8_BLOCK),
        );
        let data = TensorData::quantized(weights, [d_in, width], scheme, &scales, None);
        Ok(Some(Linear {
            weight: Param::from_tensor(Tensor::from_data(data, self.device)),
            bias: biases.map(|b| self.param(b, [width])),
        }))
    }

    /// [`Tensors::linears`] from f16 parts, kept f16 on the GPU, whose kernels unpack them two columns
    /// to a word (so the width even): `None` if a part is stored otherwise, or elsewhere (the CPU, and
    /// training), where they are widened.
    fn f16_linears(
        &self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Option<Linear>> {
        let width = prefixes.len() * d_out;
        if self.device.is_autodiff() || *self.device == Device::flex() || !width.is_multiple_of(2) {
            return Ok(None);
        }
        let read = |name: &str| self.checkpoint.read_f16(name, [d_out, d_in]);
        let Some(weights) = stored_parts(prefixes, read)? else {
            return Ok(None);
        };
        let biases = self.biases(prefixes, d_out, bias)?;
        let data = TensorData::new(side_by_side(&weights, d_in), [d_in, width]);
        Ok(Some(Linear {
            weight: Param::from_tensor(Tensor::from_data(data, (self.device, DType::F16))),
            bias: biases.map(|b| self.param(b, [width])),
        }))
    }

    /// The parts' biases end to end, if the Linears have them.
    fn biases(&self, prefixes: &[String], d_out: usize, bias: bool) -> Result<Option<Vec<f32>>> {
        bias.then(|| {
            prefixes
                .iter()
                .map(|prefix| self.checkpoint.read(&format!("{prefix}.bias"), &[d_out]))
                .collect::<Result<Vec<_>>>()
                .map(|parts| parts.concat())
        })
        .transpose()
    }

    /// The encoder's prefix (`"bert."`) if the checkpoint is a task model's, `""` if a bare encoder's.
    fn encoder_prefix(&self, config: &BertConfig) -> &'static str {
        let names = Layout::of(config.architecture);
        let word = format!("{}{}.weight", names.encoder, names.word_embeddings);
        match self.checkpoint.contains(&word) {
            true => names.encoder,
            false => "",
        }
    }
}

impl Tensors for Loader<'_> {
    fn tensor1(
        &mut self,
        name: &str,
        len: usize,
        _: Option<&Param<Tensor<1>>>,
    ) -> Result<Param<Tensor<1>>> {
        Ok(self.param(self.checkpoint.read(name, &[len])?, [len]))
    }

    fn tensor2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        _: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        Ok(self.param(self.checkpoint.read(name, &shape)?, shape))
    }

    fn optional2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        _: Option<Option<&Param<Tensor<2>>>>,
    ) -> Result<Option<Param<Tensor<2>>>> {
        match self.checkpoint.contains(name) {
            true => self.tensor2(name, shape, None).map(Some),
            false => Ok(None),
        }
    }

    fn which<'n>(&self, names: &[&'n str]) -> &'n str {
        let last = names[names.len() - 1];
        names
            .iter()
            .copied()
            .find(|n| self.checkpoint.contains(n))
            .unwrap_or(last)
    }

    fn linears(
        &mut self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
        _: Option<&Linear>,
    ) -> Result<Linear> {
        if let Some(linear) = self.q8_linears(prefixes, d_in, d_out, bias)? {
            return Ok(linear);
        }
        if let Some(linear) = self.f16_linears(prefixes, d_in, d_out, bias)? {
            return Ok(linear);
        }
        // Every part read (and its shape checked against the file) before the sizes from config.json
        // allocate anything.
        let weights = prefixes
            .iter()
            .map(|prefix| {
                self.checkpoint
                    .read(&format!("{prefix}.weight"), &[d_out, d_in])
            })
            .collect::<Result<Vec<_>>>()?;
        let biases = self.biases(prefixes, d_out, bias)?;
        let width = prefixes.len() * d_out;
        Ok(Linear {
            weight: self.param(side_by_side(&weights, d_in), [d_in, width]),
            bias: biases.map(|b| self.param(b, [width])),
        })
    }

    fn layer_norm(
        &mut self,
        prefix: &str,
        width: usize,
        epsilon: f64,
        bias: bool,
        _: Option<&LayerNorm>,
    ) -> Result<LayerNorm> {
        // Read first: `init` allocates `width` from config.json, checked against the file here.
        let gamma = self.tensor1(&format!("{prefix}.weight"), width, None)?;
        let beta = match bias {
            true => Some(self.tensor1(&format!("{prefix}.bias"), width, None)?),
            false => None,
        };
        // `init` only sets epsilon here; its ones/zeros are replaced at once.
        let mut norm = LayerNormConfig::new(width)
            .with_epsilon(epsilon)
            .init(self.device);
        norm.gamma = gamma;
        norm.beta = beta;
        Ok(norm)
    }
}

/// Each part's `{prefix}.weight` as `read` finds it stored; `None` if a part is stored otherwise.
fn stored_parts<T>(
    prefixes: &[String],
    read: impl Fn(&str) -> Result<Option<T>>,
) -> Result<Option<Vec<T>>> {
    let mut parts = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        match read(&format!("{prefix}.weight"))? {
            Some(part) => parts.push(part),
            None => return Ok(None),
        }
    }
    Ok(Some(parts))
}

/// PyTorch Linears' `[out, columns]` matrices (or their block scales) as one burn matrix `[columns, n × out]`,
/// the parts' outputs side by side.
fn side_by_side<T: Copy + Default>(parts: &[Vec<T>], columns: usize) -> Vec<T> {
    let width: usize = parts.iter().map(|p| p.len() / columns.max(1)).sum();
    let mut out = vec![T::default(); columns * width];
    let mut first = 0;
    for part in parts {
        for (o, row) in part.chunks_exact(columns.max(1)).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                out[i * width + first + o] = x;
            }
        }
        first += part.len() / columns.max(1);
    }
    out
}

/// The encoder from a bare encoder's checkpoint or any task model's of its family (heads ignored).
pub fn load_bert(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertModel> {
    persistent(device, || {
        let mut loader = Loader { checkpoint, device };
        let prefix = loader.encoder_prefix(config);
        bert(&mut loader, config, prefix, None)
    })
}

/// What `load` uploads goes to cubecl's pool for weights (exact sizes, never moved or reclaimed), not to
/// the pages activations are carved from. There, the pages' size would follow the largest weight (~56 MB
/// for MiniLM's vocabulary table), and each recorded call keeps the pages it used (pipelines/replay.rs).
fn persistent<T: Send>(device: &Device, load: impl FnOnce() -> T + Send) -> T {
    device.memory_persistent_allocations(load, |load| load())
}

/// A `*ForMaskedLM` checkpoint; the decoder is tied to the word embeddings unless the checkpoint
/// carries `cls.predictions.decoder.weight`.
pub fn load_bert_for_masked_lm(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForMaskedLM> {
    persistent(device, || {
        let mut loader = Loader { checkpoint, device };
        let prefix = loader.encoder_prefix(config);
        Ok(BertForMaskedLM {
            bert: bert(&mut loader, config, prefix, None)?,
            cls: mlm_head(&mut loader, config, None)?,
        })
    })
}

/// A `*ForSequenceClassification` checkpoint: the encoder and the classifier on its first token.
pub fn load_bert_for_sequence_classification(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForSequenceClassification> {
    persistent(device, || {
        let mut loader = Loader { checkpoint, device };
        let prefix = loader.encoder_prefix(config);
        Ok(BertForSequenceClassification {
            bert: bert(&mut loader, config, prefix, None)?,
            classifier: classification_head(&mut loader, config, prefix, None)?,
        })
    })
}

/// A `*ForTokenClassification` checkpoint: the encoder and `classifier` onto `id2label`'s labels.
pub fn load_bert_for_token_classification(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForTokenClassification> {
    let name = Layout::of(config.architecture).token_classifier;
    let labels = config.labels.len();
    let (bert, head, classifier) = per_token(checkpoint, config, device, name, labels)?;
    Ok(BertForTokenClassification {
        bert,
        head,
        classifier,
        labels: config.labels.clone(),
    })
}

/// A `*ForQuestionAnswering` checkpoint: the encoder and `qa_outputs` (start and end logits).
pub fn load_bert_for_question_answering(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForQuestionAnswering> {
    let name = Layout::of(config.architecture).qa_outputs;
    let (bert, head, qa_outputs) = per_token(checkpoint, config, device, name, 2)?;
    Ok(BertForQuestionAnswering {
        bert,
        head,
        qa_outputs,
    })
}

/// What the per-token tasks share: the encoder, ModernBERT's `head`, and the Linear `name` onto `outputs`
/// values at every token.
fn per_token(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
    name: &str,
    outputs: usize,
) -> Result<(BertModel, Option<TokenHead>, Linear)> {
    persistent(device, || {
        let mut loader = Loader { checkpoint, device };
        let prefix = loader.encoder_prefix(config);
        Ok((
            bert(&mut loader, config, prefix, None)?,
            token_head(&mut loader, config)?,
            loader.linear(name, config.hidden_size, outputs, true, None)?,
        ))
    })
}

/// ModernBERT's `head` under its token classifier and span head; `None` for the families without one.
fn token_head(loader: &mut Loader, c: &BertConfig) -> Result<Option<TokenHead>> {
    let Some(names) = &Layout::of(c.architecture).token_head else {
        return Ok(None);
    };
    let h = c.hidden_size;
    Ok(Some(TokenHead {
        dense: loader.linear(names.dense, h, h, c.classifier_bias, None)?,
        layer_norm: loader.layer_norm(names.norm, h, c.layer_norm_eps, c.norm_bias, None)?,
        layer_norm_eps: c.layer_norm_eps,
        act: c.head_act,
    }))
}

/// Which tensors [`save_bert_for_masked_lm`] writes, and in what precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub dtype: Dtype,
    /// `false` writes a delta against the base encoder: everything but the (frozen) word embeddings.
    pub word_embeddings: bool,
}

/// Writes a `BertForMaskedLM` under Hugging Face's names (`bert.…`, `cls.predictions.…`): the inverse
/// of [`load_bert_for_masked_lm`], by the same walk. Linear weights go back to PyTorch's `[out, in]`.
pub fn save_bert_for_masked_lm(
    model: &BertForMaskedLM,
    config: &BertConfig,
    options: SaveOptions,
) -> Result<Vec<u8>> {
    let mut saver = Saver {
        tensors: Vec::new(),
        options,
    };
    bert(
        &mut saver,
        config,
        Layout::of(config.architecture).encoder,
        Some(&model.bert),
    )?;
    mlm_head(&mut saver, config, Some(&model.cls))?;
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

/// Collects `(name, shape, little-endian bytes)` of the parts it is handed, and hands them back.
struct Saver {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    options: SaveOptions,
}

impl Saver {
    /// Writes the model's own tensor and hands it back.
    fn keep<const D: usize>(
        &mut self,
        name: &str,
        have: Option<&Param<Tensor<D>>>,
    ) -> Result<Param<Tensor<D>>> {
        let have = part(have)?;
        self.write(name.to_string(), have.val());
        Ok(have.clone())
    }

    fn write<const D: usize>(&mut self, name: String, tensor: Tensor<D>) {
        if !self.options.word_embeddings && name.ends_with("embeddings.word_embeddings.weight") {
            return;
        }
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let bytes = match self.options.dtype {
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
}

/// Saving walks the model it writes: every part is there.
fn part<T>(have: Option<T>) -> Result<T> {
    have.ok_or_else(|| Error::Weights("saving needs the model's own tensors".into()))
}

impl Tensors for Saver {
    fn tensor1(
        &mut self,
        name: &str,
        _: usize,
        have: Option<&Param<Tensor<1>>>,
    ) -> Result<Param<Tensor<1>>> {
        self.keep(name, have)
    }

    fn tensor2(
        &mut self,
        name: &str,
        _: [usize; 2],
        have: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        self.keep(name, have)
    }

    fn optional2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        have: Option<Option<&Param<Tensor<2>>>>,
    ) -> Result<Option<Param<Tensor<2>>>> {
        part(have)?
            .map(|t| self.tensor2(name, shape, Some(t)))
            .transpose()
    }

    fn which<'n>(&self, names: &[&'n str]) -> &'n str {
        names[names.len() - 1]
    }

    fn linears(
        &mut self,
        prefixes: &[String],
        _: usize,
        d_out: usize,
        _: bool,
        have: Option<&Linear>,
    ) -> Result<Linear> {
        let linear = part(have)?;
        for (n, prefix) in prefixes.iter().enumerate() {
            let start = n * d_out;
            let weight = linear.weight.val().narrow(1, start, d_out);
            self.write(format!("{prefix}.weight"), weight.transpose());
            if let Some(bias) = &linear.bias {
                self.write(format!("{prefix}.bias"), bias.val().narrow(0, start, d_out));
            }
        }
        Ok(linear.clone())
    }

    fn layer_norm(
        &mut self,
        prefix: &str,
        _: usize,
        _: f64,
        _: bool,
        have: Option<&LayerNorm>,
    ) -> Result<LayerNorm> {
        let norm = part(have)?;
        self.write(format!("{prefix}.weight"), norm.gamma.val());
        if let Some(beta) = &norm.beta {
            self.write(format!("{prefix}.bias"), beta.val());
        }
        Ok(norm.clone())
    }
}
