//! A Hugging Face checkpoint: `model.safetensors`, or shards with `model.safetensors.index.json`, parsed
//! from bytes, so a browser can hand over what it fetched. Each tensor is checked by name, shape and dtype
//! (and for NaN or infinity) as it is read; the f16 and int8 variants `webbert quantize` writes are made
//! here.

use std::collections::{BTreeMap, BTreeSet};

use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{Error, Result};

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
    pub(crate) fn read_q8(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
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
    pub(crate) fn read_f16(&self, name: &str, shape: [usize; 2]) -> Result<Option<Vec<half::f16>>> {
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
    pub(crate) fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
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
