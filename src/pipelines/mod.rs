//! Text in, results out: fill-mask, sentence embeddings, text classification and reranking, named entities,
//! question answering, and attention maps; one file per task. Reads back from the device are async, so the
//! same code runs on WebGPU in a browser.

mod classification;
mod embeddings;
mod fill_mask;
mod question_answering;
pub mod replay;
mod token_classification;

pub use classification::{Classifier, Label, Ranked, TextInput};
pub use embeddings::Embedder;
pub use fill_mask::{FillMask, FillMaskOutput, MAX_PREDICTIONS, Prediction};
pub use question_answering::{Answer, QaOptions, QuestionAnswerer, SpanLogits};
pub use replay::Replays;
pub use token_classification::{Aggregation, Entity, TokenClassifier};

use burn::tensor::{Device, Tensor};
use serde::Serialize;

use crate::backend::Reading;
use crate::error::{Error, Result};
use crate::io::source::ModelFiles;
use crate::model::heads::{Pooling, Sentence, pool};
use crate::model::{Batch, BatchData, BertModel};
use crate::tokenizer::{Encoding, Tokenizer};

/// Most texts in one forward pass.
const BATCH_TEXTS: usize = 32;
/// Most bytes of any one activation of a forward pass or read back: half the smallest
/// `maxStorageBufferBindingSize` browsers give by default (128 MiB), and a bound on device memory.
const BATCH_BYTES: usize = 64 << 20;

/// A tokenizer and a model on one device.
pub struct Pipeline<M> {
    pub tokenizer: Tokenizer,
    pub model: M,
    pub device: Device,
    /// Fills batches to one length; attention ignores it.
    pub pad_id: u32,
    /// The model's shape, as far as it sizes a batch.
    pub shape: Shape,
    /// How the checkpoint makes sentence vectors: what embedding calls do unless told otherwise.
    pub sentence: Sentence,
    /// Its calls' GPU work, recorded per input shape.
    pub replays: Replays,
}

impl<M> Pipeline<M> {
    /// `model` on `device`, reading `files`' texts with `tokenizer`.
    fn with(files: &ModelFiles, tokenizer: Tokenizer, model: M, device: Device) -> Self {
        Self {
            tokenizer,
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
            replays: Replays::default(),
        }
    }

    /// `encodings` as one batch, padded to the length that [`replay::padded_len`] gives them.
    fn batch_data(&self, encodings: &[Encoding]) -> BatchData {
        let longest = encodings.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let max = self.tokenizer.max_len();
        let len = replay::padded_len(&self.device, encodings.len(), longest, max);
        BatchData::padded(encodings, self.pad_id, len)
    }
}

/// The sizes that decide how much of a call fits in one forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub num_heads: usize,
    /// The widest activation per token: the feed-forward's inner layer, or Q, K and V side by side.
    pub width: usize,
    /// How many `[heads, seq, seq]` tensors a layer's attention holds at once: the scores, and DeBERTa's
    /// c2p and p2c terms before and after their gather.
    pub score_tensors: usize,
    pub vocab_size: usize,
}

impl Shape {
    fn of(config: &crate::model::config::BertConfig) -> Self {
        Self {
            num_heads: config.num_attention_heads,
            width: config.feed_forward_width().max(3 * config.hidden_size),
            score_tensors: match config.relative_attention {
                Some(relative) => 1 + 2 * (relative.c2p as usize + relative.p2c as usize),
                None => 1,
            },
            vocab_size: config.vocab_size,
        }
    }

    /// How many texts padded to `seq` tokens one forward pass takes (at least one): every activation,
    /// the attention scores of all heads included, within `BATCH_BYTES` (64 MiB).
    pub fn texts_per_batch(&self, seq: usize) -> usize {
        let per_text = 4 * seq * self.width.max(self.score_tensors * self.num_heads * seq);
        (BATCH_BYTES / per_text.max(1)).clamp(1, BATCH_TEXTS)
    }
}

/// Splits encodings, in order, into forward passes under [`Shape::texts_per_batch`] of the longest in
/// each (the others are padded to it). Sorted by length, texts of nearby lengths share a pass; question
/// answering's spans come in the document's order, its last usually the shortest.
fn batches<T>(items: Vec<(T, Encoding)>, shape: &Shape) -> Vec<Vec<(T, Encoding)>> {
    let mut batches: Vec<(usize, Vec<(T, Encoding)>)> = Vec::new();
    for item in items {
        let seq = item.1.ids.len();
        match batches.last_mut() {
            Some((longest, batch)) if batch.len() < shape.texts_per_batch(seq.max(*longest)) => {
                *longest = seq.max(*longest);
                batch.push(item);
            }
            _ => batches.push((seq, vec![item])),
        }
    }
    batches.into_iter().map(|(_, batch)| batch).collect()
}

/// Where one forward pass spends its time on this device (see [`Pipeline::timing`]).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Building the batch on the device and submitting every kernel of the encoder and pooling (on a GPU,
    /// from a size's third call, replaying them as recorded): the CPU's share (the kernels run behind it).
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
    values(Reading::start(tensor)).await
}

async fn values(reading: Reading) -> Result<Vec<f32>> {
    reading
        .data()
        .await?
        .try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("unexpected result type: {e:?}")))
}

/// On a GPU, reads each forward pass's values once the next pass is launched, so that the GPU runs that
/// pass while these come back (a read in Chrome took ~3 ms however short the work) and while the CPU
/// prepares the one after. Where the read could not be queued (on the CPU, which computes a pass as it is
/// launched), each pass is read before the next. Each step of `launches` launches a pass and begins its
/// read; `take` gets each pass's item and values, in order.
async fn read_one_ahead<T>(
    mut launches: impl Iterator<Item = Result<(T, replay::Pending)>>,
    mut take: impl AsyncFnMut(T, Vec<f32>) -> Result<()>,
) -> Result<()> {
    let mut launched = launches.next().transpose()?;
    while let Some((item, pending)) = launched {
        if pending.is_queued() {
            launched = launches.next().transpose()?;
            take(item, pending.values().await?).await?;
        } else {
            take(item, pending.values().await?).await?;
            launched = launches.next().transpose()?;
        }
    }
    Ok(())
}

impl<M: AsRef<BertModel>> Pipeline<M> {
    /// Every layer's attention probabilities for `text`.
    pub async fn attention(&self, text: &str) -> Result<AttentionOutput> {
        attention(&self.tokenizer, self.model.as_ref(), &self.device, text).await
    }

    /// Times one forward pass of a sequence of `tokens` tokens (no tokenizing), split into submitting and
    /// waiting: what a call of that size costs on this device, and where.
    pub async fn timing(&self, tokens: usize) -> Result<Timing> {
        let max = self.tokenizer.max_len();
        if tokens == 0 || tokens > max {
            return Err(Error::Input(format!(
                "tokens must be between 1 and {max} (the model's positions), not {tokens}"
            )));
        }
        let start = web_time::Instant::now();
        let data = BatchData::from_ids(&[vec![self.pad_id; tokens]], self.pad_id);
        let pooled = self
            .replays
            .run("timing", [0, 0], &data, &self.device, |batch: &Batch| {
                let hidden = self.model.as_ref().forward(batch);
                pool(hidden, batch.attention_mask.clone(), Pooling::Mean, false)
            });
        let submitted = web_time::Instant::now();
        pooled.read().await?;
        let done = web_time::Instant::now();
        Ok(Timing {
            submit_ms: (submitted - start).as_secs_f64() * 1e3,
            wait_ms: (done - submitted).as_secs_f64() * 1e3,
        })
    }
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    tokenizer.encode(non_empty(text)?)
}

/// `text`, or the error for one with nothing to tokenize.
fn non_empty(text: &str) -> Result<&str> {
    if text.trim().is_empty() {
        return Err(Error::Input("the text is empty".into()));
    }
    Ok(text)
}

/// A loading error naming a missing head tensor, with what the task needs.
fn with_hint(error: Error, task: &str, kind: &str) -> Error {
    match error {
        Error::Weights(msg) if msg.contains("is missing") => {
            Error::Weights(format!("{msg}: {task} needs a …{kind} checkpoint"))
        }
        other => other,
    }
}

async fn attention(
    tokenizer: &Tokenizer,
    model: &BertModel,
    device: &Device,
    text: &str,
) -> Result<AttentionOutput> {
    let encoding = encode(tokenizer, text)?;
    let (layers, heads) = match model.layers.first() {
        Some(layer) => (model.layers.len(), layer.attention.num_heads),
        None => (0, 0),
    };
    check_attention_maps(layers, heads, encoding.ids.len())?;
    let batch = Batch::new(std::slice::from_ref(&encoding), 0, device);
    let (_, attentions) = model.forward_with_attentions(&batch);
    let num_layers = attentions.len();
    let [_, num_heads, seq, _] = attentions[0].dims();
    // As few reads as BATCH_BYTES allows: every read back is a round trip to the device.
    let layers_per_read = (BATCH_BYTES / (4 * num_heads * seq * seq)).max(1);
    let mut weights = Vec::with_capacity(num_layers * num_heads * seq * seq);
    let mut attentions = attentions.into_iter().peekable();
    while attentions.peek().is_some() {
        let layers: Vec<_> = attentions.by_ref().take(layers_per_read).collect();
        let rows = layers.len() * num_heads * seq;
        weights.extend(read(Tensor::cat(layers, 0).reshape([rows, seq])).await?);
    }
    Ok(AttentionOutput {
        tokens: tokenizer.ids_to_tokens(&encoding.ids),
        offsets: encoding.offsets,
        num_layers,
        num_heads,
        weights,
        truncated: encoding.truncated,
    })
}

/// Most bytes of the attention maps one call builds and returns: every layer's, all heads, `[seq, seq]` each.
/// BERT-large's at 512 tokens take 384 MiB; ModernBERT reads texts 16 times as long.
const MAX_ATTENTION_BYTES: usize = 512 << 20;

/// An input error if the maps of `seq` tokens would take more than [`MAX_ATTENTION_BYTES`].
fn check_attention_maps(layers: usize, heads: usize, seq: usize) -> Result<()> {
    let bytes = [layers, heads, seq, seq]
        .iter()
        .fold(4usize, |total, n| total.saturating_mul(*n));
    if bytes > MAX_ATTENTION_BYTES {
        return Err(Error::Input(format!(
            "the attention maps of {seq} tokens take {} MiB ({layers} layers × {heads} heads × {seq}² \
             floats), more than {} MiB: pass a shorter text",
            bytes >> 20,
            MAX_ATTENTION_BYTES >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(len: usize) -> Encoding {
        Encoding {
            ids: vec![0; len],
            token_type_ids: vec![0; len],
            offsets: vec![(0, 0); len],
            special: vec![false; len],
            truncated: false,
        }
    }

    /// all-MiniLM-L6-v2's sizes: at most 32 texts of up to 200 tokens, 512-token texts 5 at a time; and
    /// every batch's activations (scores of all heads included) stay within BATCH_BYTES.
    #[test]
    fn batches_keep_order_and_stay_under_the_byte_budget() {
        let shape = Shape {
            num_heads: 12,
            width: 1536,
            score_tensors: 1,
            vocab_size: 30522,
        };
        // Sorted by length, as embeddings and classification are; and a document's spans, the last
        // shorter, which must not join five full ones (six texts of 512 would pass the budget).
        let sorted: Vec<usize> = [vec![8; 40], vec![200; 9], vec![512; 12]].concat();
        let spans: Vec<usize> = [vec![512; 5], vec![8]].concat();
        for (lengths, want) in [(sorted, vec![32, 17, 5, 5, 2]), (spans, vec![5, 1])] {
            let items: Vec<(usize, Encoding)> = lengths
                .iter()
                .enumerate()
                .map(|(i, &n)| (i, encoding(n)))
                .collect();
            let batches = batches(items, &shape);
            let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
            assert_eq!(sizes, want);
            let order: Vec<usize> = batches.iter().flatten().map(|(i, _)| *i).collect();
            assert_eq!(order, (0..lengths.len()).collect::<Vec<_>>());
            for batch in &batches {
                let seq = batch.iter().map(|(_, e)| e.ids.len()).max().unwrap();
                let scores = 4 * batch.len() * shape.num_heads * seq * seq;
                let inner = 4 * batch.len() * seq * shape.width;
                assert!(batch.len() == 1 || scores.max(inner) <= BATCH_BYTES);
            }
        }
        // DeBERTa-v3-base holds five score-sized tensors per layer (scores, c2p and p2c before and after
        // their gather): 512-token texts go one at a time, 128-token ones 17 at a time.
        let deberta = Shape {
            score_tensors: 5,
            ..shape
        };
        assert_eq!([512, 128].map(|seq| deberta.texts_per_batch(seq)), [1, 17]);
    }

    /// BERT-large's maps of 512 tokens (384 MiB) are built; ModernBERT-base's of 8,192 tokens (66 GiB) or of
    /// 2,048 (4.1 GiB) are refused before any is computed.
    #[test]
    fn attention_maps_are_bounded() {
        assert!(check_attention_maps(24, 16, 512).is_ok());
        let err = check_attention_maps(22, 12, 2048).unwrap_err().to_string();
        assert_eq!(
            err,
            "input: the attention maps of 2048 tokens take 4224 MiB (22 layers × 12 heads × 2048² floats), \
             more than 512 MiB: pass a shorter text"
        );
        assert!(check_attention_maps(22, 12, 8192).is_err());
        assert!(check_attention_maps(usize::MAX, 2, usize::MAX).is_err());
    }
}
