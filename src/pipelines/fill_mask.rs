//! Fill-mask: for every mask token, the likeliest tokens and their probabilities.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use super::replay::Masked;
use super::{BATCH_BYTES, Pipeline, encode, read};
use crate::error::{Error, Result};
use crate::io::layout::Layout;
use crate::io::source::ModelFiles;
use crate::io::weights::load_bert_for_masked_lm;
use crate::model::Batch;
use crate::model::heads::BertForMaskedLM;
use crate::ops::top_k::{MAX_GPU_K, softmax_top_k, softmax_top_k_host};

/// Most predictions (masks × `top_k`) one fill-mask call returns: each carries its own copy of the text.
pub const MAX_PREDICTIONS: usize = 50_000;

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
    /// For each mask, in order, the `top_k` most likely tokens.
    pub masks: Vec<Vec<Prediction>>,
    pub truncated: bool,
}

impl FillMask {
    /// A `*ForMaskedLM` checkpoint (its MLM head required: `cls.predictions.*`, `lm_head.*`, …).
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let head = Layout::mlm_of(&files.config);
        let names = [head.dense, head.bias[0], head.bias[1]];
        let model = load_bert_for_masked_lm(&files.checkpoint, &files.config, &device).map_err(|e| match e {
            Error::Weights(msg) if names.iter().any(|n| msg.contains(n)) => Error::Weights(format!(
                "{msg}: fill-mask needs a masked-LM checkpoint (…ForMaskedLM), not a bare encoder or a classifier"
            )),
            other => other,
        })?;
        Ok(Self::with(files, files.tokenizer.clone(), model, device))
    }

    /// For every mask token (`[MASK]`, `<mask>`) in `text`, the `top_k` most likely tokens with their
    /// softmax probabilities.
    pub async fn predict(&self, text: &str, top_k: usize) -> Result<FillMaskOutput> {
        if top_k == 0 {
            return Err(Error::Input("top_k must be at least 1".into()));
        }
        let (Some(mask_id), Some(mask)) =
            (self.tokenizer.mask_token_id(), self.tokenizer.mask_token())
        else {
            return Err(Error::Tokenizer(
                "the tokenizer has no mask token ([MASK] or <mask>)".into(),
            ));
        };
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
            return Err(Error::Input(format!("the text has no {mask} token{hint}")));
        }

        let top_k = top_k.min(self.shape.vocab_size);
        if positions.len() * top_k > MAX_PREDICTIONS {
            return Err(Error::Input(format!(
                "{} masks × topK {top_k} is more than {MAX_PREDICTIONS} predictions; ask for fewer",
                positions.len()
            )));
        }

        let data = self.batch_data(std::slice::from_ref(&encoding));
        // Only the masked positions go through the head: the decoder onto the vocabulary is the costly
        // part. Their logits in pieces under BATCH_BYTES; per mask the k probabilities, then the k ids.
        let rows_per_read = (BATCH_BYTES / (4 * self.shape.vocab_size)).max(1);
        let best = if positions.len() <= rows_per_read {
            let rows = TensorData::new(positions.clone(), [positions.len()]);
            let best = self.replays.run(
                "fill-mask",
                [positions.len(), top_k],
                &(data, rows),
                &self.device,
                |m: &Masked| self.best(self.hidden(&m.batch), m.positions.clone(), top_k),
            );
            self.selected(best.read().await?, top_k)
        } else {
            let hidden = self.hidden(&Batch::upload(&data, &self.device));
            let mut best = Vec::with_capacity(positions.len() * 2 * top_k);
            for rows in positions.chunks(rows_per_read) {
                let rows = TensorData::new(rows.to_vec(), [rows.len()]);
                let rows = Tensor::<1, Int>::from_data(rows, &self.device);
                let values = read(self.best(hidden.clone(), rows, top_k)).await?;
                best.extend(self.selected(values, top_k));
            }
            best
        };

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
                            // As the pipeline shows it: RoBERTa's `Ġcapital` as " capital".
                            token: self.tokenizer.decode(&[id], false),
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

    /// The last hidden states of a batch of one text: `[seq, hidden]`.
    fn hidden(&self, batch: &Batch) -> Tensor<2> {
        let hidden = self.model.bert.forward(batch);
        let [_, seq, width] = hidden.dims();
        hidden.reshape([seq, width])
    }

    /// For each of `rows` (positions in `hidden`), the `top_k` probabilities, then their token ids; past
    /// [`MAX_GPU_K`], the logits, for [`Self::selected`] to select from on the host (burn's sort of a row
    /// on the GPU reads it back synchronously, which a browser cannot).
    fn best(&self, hidden: Tensor<2>, rows: Tensor<1, Int>, top_k: usize) -> Tensor<2> {
        let logits = self.model.head(hidden.select(0, rows));
        if top_k <= MAX_GPU_K {
            softmax_top_k(logits, top_k)
        } else {
            logits
        }
    }

    /// What [`Self::best`] read back, as the `top_k` probabilities and token ids of each row.
    fn selected(&self, values: Vec<f32>, top_k: usize) -> Vec<f32> {
        if top_k <= MAX_GPU_K {
            values
        } else {
            softmax_top_k_host(&values, self.shape.vocab_size, top_k)
        }
    }
}
