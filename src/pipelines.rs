//! Text in, results out: fill-mask, sentence embeddings, and attention maps. Reads back from the device
//! are async, so the same code runs on WebGPU in a browser.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::heads::{BertForMaskedLM, Pooling, pool};
use crate::model::{Batch, BertModel};
use crate::ops::top_k::softmax_top_k;
use crate::source::ModelFiles;
use crate::tokenizer::{Encoding, Tokenizer};
use crate::weights::{load_bert, load_bert_for_masked_lm};

/// Texts per forward pass when embedding many: bounds device memory.
const EMBED_BATCH: usize = 32;

/// A tokenizer and a model on one device.
pub struct Pipeline<M> {
    pub tokenizer: Tokenizer,
    pub model: M,
    pub device: Device,
    /// Fills batches to one length; attention ignores it.
    pub pad_id: u32,
}

pub type Embedder = Pipeline<BertModel>;
pub type FillMask = Pipeline<BertForMaskedLM>;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    pub token: String,
    pub token_id: u32,
    pub score: f32,
    /// The input with this token in place of the mask.
    pub sequence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FillMaskOutput {
    /// For each `[MASK]`, in order, the `top_k` most likely tokens.
    pub masks: Vec<Vec<Prediction>>,
    pub truncated: bool,
}

/// Where one forward pass spends its time on this device (see [`Pipeline::timing`]).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Building the batch on the device and submitting every kernel of the encoder and pooling: the
    /// CPU's share (on a GPU the kernels run behind it).
    pub submit_ms: f64,
    /// Waiting for the device to finish and reading one pooled vector back.
    pub wait_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttentionOutput {
    pub tokens: Vec<String>,
    pub offsets: Vec<(usize, usize)>,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Probabilities `[layer][head][query][key]`, flattened row-major.
    pub weights: Vec<f32>,
    pub truncated: bool,
}

async fn read(tensor: Tensor<2>) -> Result<Vec<f32>> {
    tensor
        .into_data_async()
        .await
        .map_err(|e| Error::Device(format!("reading results back failed: {e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("unexpected result type: {e:?}")))
}

impl<M> Pipeline<M> {
    /// Times one forward pass of a sequence of `tokens` tokens (no tokenizing), split into submitting and
    /// waiting: what a call of that size costs on this device, and where.
    pub async fn timing(&self, tokens: usize) -> Result<Timing>
    where
        M: AsRef<BertModel>,
    {
        let max = self.tokenizer.max_len();
        if tokens == 0 || tokens > max {
            return Err(Error::Input(format!(
                "tokens must be between 1 and {max} (the model's positions), not {tokens}"
            )));
        }
        let start = web_time::Instant::now();
        let batch = Batch::from_ids(&[vec![self.pad_id; tokens]], self.pad_id, &self.device);
        let hidden = self.model.as_ref().forward(&batch);
        let pooled = pool(hidden, batch.attention_mask, Pooling::Mean, false);
        let submitted = web_time::Instant::now();
        read(pooled).await?;
        let done = web_time::Instant::now();
        Ok(Timing {
            submit_ms: (submitted - start).as_secs_f64() * 1e3,
            wait_ms: (done - submitted).as_secs_f64() * 1e3,
        })
    }
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    if text.trim().is_empty() {
        return Err(Error::Input("the text is empty".into()));
    }
    tokenizer.encode(text)
}

impl Embedder {
    /// The encoder of any BERT checkpoint (heads ignored).
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert(&files.checkpoint, &files.config, &device)?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
        })
    }

    /// One vector per text, `[CLS]` or mean-pooled (padding excluded), optionally L2-normalised.
    pub async fn embed(
        &self,
        texts: &[String],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let encode_all = |chunk: &[String]| {
            chunk
                .iter()
                .map(|t| encode(&self.tokenizer, t))
                .collect::<Result<Vec<_>>>()
        };
        let mut chunks = texts.chunks(EMBED_BATCH);
        let mut next = chunks.next().map(encode_all).transpose()?;
        let mut rows = Vec::with_capacity(texts.len());
        while let Some(encodings) = next {
            let batch = Batch::new(&encodings, self.pad_id, &self.device);
            let hidden = self.model.forward(&batch);
            let pooled = pool(hidden, batch.attention_mask, pooling, normalize);
            // A GPU runs this chunk while the CPU tokenizes the next (tokenizing 32 texts of 128 tokens
            // took as long as their forward pass on an H100).
            self.device
                .flush()
                .map_err(|e| Error::Device(format!("submitting the work failed: {e:?}")))?;
            next = chunks.next().map(encode_all).transpose()?;
            let width = pooled.dims()[1];
            rows.extend(read(pooled).await?.chunks_exact(width).map(<[f32]>::to_vec));
        }
        Ok(rows)
    }

    pub async fn attention(&self, text: &str) -> Result<AttentionOutput> {
        attention(&self.tokenizer, &self.model, &self.device, text).await
    }
}

impl FillMask {
    /// A `BertForMaskedLM` checkpoint (`cls.predictions.*` required).
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert_for_masked_lm(&files.checkpoint, &files.config, &device).map_err(|e| match e {
            Error::Weights(msg) if msg.contains("cls.predictions") => Error::Weights(format!(
                "{msg}: fill-mask needs a masked-LM checkpoint (BertForMaskedLM), not a bare encoder"
            )),
            other => other,
        })?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
        })
    }

    /// For every `[MASK]` in `text`, the `top_k` most likely tokens with their softmax probabilities.
    pub async fn predict(&self, text: &str, top_k: usize) -> Result<FillMaskOutput> {
        if top_k == 0 {
            return Err(Error::Input("top_k must be at least 1".into()));
        }
        let mask_id = self
            .tokenizer
            .mask_token_id()
            .ok_or_else(|| Error::Tokenizer("the tokenizer has no [MASK] token".into()))?;
        let encoding = encode(&self.tokenizer, text)?;
        let positions: Vec<i64> = encoding
            .ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id == mask_id)
            .map(|(i, _)| i as i64)
            .collect();
        if positions.is_empty() {
            let hint = if encoding.truncated {
                " (the text was truncated; was it past the end?)"
            } else {
                ""
            };
            return Err(Error::Input(format!("the text has no [MASK] token{hint}")));
        }

        let batch = Batch::new(std::slice::from_ref(&encoding), self.pad_id, &self.device);
        let hidden = self.model.bert.forward(&batch);
        let [_, seq, width] = hidden.dims();
        // Only the masked positions go through the head: the decoder onto the vocabulary is the costly part.
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(positions.clone(), [positions.len()]),
            &self.device,
        );
        let masked = hidden.reshape([seq, width]).select(0, index);
        let logits = self.model.head(masked);
        let top_k = top_k.min(logits.dims()[1]);
        // Per mask: the k probabilities, then the k token ids (one read for everything).
        let best = read(softmax_top_k(logits, top_k)).await?;

        let single = positions.len() == 1;
        let masks = best
            .chunks_exact(2 * top_k)
            .zip(&positions)
            .map(|(row, &pos)| {
                let (scores, ids) = row.split_at(top_k);
                scores
                    .iter()
                    .zip(ids)
                    .map(|(&score, &id)| {
                        let id = id as u32;
                        let mut ids = encoding.ids.clone();
                        ids[pos as usize] = id;
                        Prediction {
                            token: self
                                .tokenizer
                                .id_to_token(id)
                                .unwrap_or_else(|| "[UNK]".into()),
                            token_id: id,
                            score,
                            sequence: self.tokenizer.decode(&ids, single),
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(FillMaskOutput {
            masks,
            truncated: encoding.truncated,
        })
    }

    pub async fn attention(&self, text: &str) -> Result<AttentionOutput> {
        attention(&self.tokenizer, &self.model.bert, &self.device, text).await
    }
}

async fn attention(
    tokenizer: &Tokenizer,
    model: &BertModel,
    device: &Device,
    text: &str,
) -> Result<AttentionOutput> {
    let encoding = encode(tokenizer, text)?;
    let batch = Batch::new(std::slice::from_ref(&encoding), 0, device);
    let (_, attentions) = model.forward_with_attentions(&batch);
    let num_layers = attentions.len();
    let [_, num_heads, seq, _] = attentions[0].dims();
    // One read for all layers: every read back is a round trip to the device.
    let all = Tensor::cat(attentions, 0).reshape([num_layers * num_heads * seq, seq]);
    Ok(AttentionOutput {
        tokens: encoding.tokens,
        offsets: encoding.offsets,
        num_layers,
        num_heads,
        weights: read(all).await?,
        truncated: encoding.truncated,
    })
}
