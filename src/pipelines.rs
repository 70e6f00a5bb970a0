//! Text in, results out: fill-mask, sentence embeddings, text classification and reranking, and
//! attention maps. Reads back from the device
//! are async, so the same code runs on WebGPU in a browser.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::layout::Layout;
use crate::io::source::ModelFiles;
use crate::io::weights::{
    load_bert, load_bert_for_masked_lm, load_bert_for_question_answering,
    load_bert_for_sequence_classification, load_bert_for_token_classification,
};
use crate::model::config::ScoreFunction;
use crate::model::heads::{
    BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, Pooling, Sentence, pool,
};
use crate::model::{Batch, BertModel};
use crate::ops::top_k::softmax_top_k;
use crate::tokenizer::{Encoding, Span, Tokenizer};

/// Most texts in one forward pass.
const BATCH_TEXTS: usize = 32;
/// Most bytes of any one activation of a forward pass or read back: half the smallest
/// `maxStorageBufferBindingSize` browsers give by default (128 MiB), and a bound on device memory.
const BATCH_BYTES: usize = 64 << 20;
/// Most predictions (masks × `top_k`) one fill-mask call returns: each carries its own copy of the text.
pub const MAX_PREDICTIONS: usize = 50_000;

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
}

/// The sizes that decide how much of a call fits in one forward pass.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub num_heads: usize,
    /// The widest activation per token: the feed-forward's inner layer, or Q, K and V side by side.
    pub width: usize,
    pub vocab_size: usize,
}

impl Shape {
    fn of(config: &crate::model::config::BertConfig) -> Self {
        Self {
            num_heads: config.num_attention_heads,
            width: config.intermediate_size.max(3 * config.hidden_size),
            vocab_size: config.vocab_size,
        }
    }

    /// How many texts padded to `seq` tokens one forward pass takes (at least one): every activation,
    /// the attention scores of all heads included, within `BATCH_BYTES` (64 MiB).
    pub fn texts_per_batch(&self, seq: usize) -> usize {
        let per_text = 4 * seq * self.width.max(self.num_heads * seq);
        (BATCH_BYTES / per_text.max(1)).clamp(1, BATCH_TEXTS)
    }
}

/// Splits encodings (sorted by length) into forward passes under [`Shape::texts_per_batch`].
fn batches<T>(sorted: Vec<(T, Encoding)>, shape: &Shape) -> Vec<Vec<(T, Encoding)>> {
    let mut batches: Vec<Vec<(T, Encoding)>> = Vec::new();
    for item in sorted {
        let seq = item.1.ids.len();
        match batches.last_mut() {
            Some(batch) if batch.len() < shape.texts_per_batch(seq) => batch.push(item),
            _ => batches.push(vec![item]),
        }
    }
    batches
}

pub type Embedder = Pipeline<BertModel>;
pub type FillMask = Pipeline<BertForMaskedLM>;
pub type Classifier = Pipeline<BertForSequenceClassification>;
pub type TokenClassifier = Pipeline<BertForTokenClassification>;
pub type QuestionAnswerer = Pipeline<BertForQuestionAnswering>;

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

    /// As [`load`](Self::load), leaving the files to load another copy (on another device). Texts are
    /// cut at sentence-transformers' `max_seq_length` where the files give one.
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert(&files.checkpoint, &files.config, &device)?;
        let tokenizer = match files.sentence.max_seq_length {
            Some(max_len) => files.tokenizer.clone().truncated_at(max_len)?,
            None => files.tokenizer.clone(),
        };
        Ok(Self {
            tokenizer,
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
        })
    }

    /// One vector per text, `[CLS]` or mean-pooled (padding excluded), optionally L2-normalised.
    pub async fn embed(
        &self,
        texts: &[String],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        self.embed_with(texts, pooling, normalize, async |_, _| Ok(()))
            .await
    }

    /// As [`embed`](Self::embed), calling `progress(done, total)` after each group of texts; an error
    /// from it (e.g. [`Error::Aborted`]) ends the call there.
    ///
    /// Texts go through in order of length, so that a batch pads its texts to little more than their
    /// own length, in batches under [`Shape::texts_per_batch`]; the vectors come back in input order.
    pub async fn embed_with(
        &self,
        texts: &[String],
        pooling: Pooling,
        normalize: bool,
        mut progress: impl AsyncFnMut(usize, usize) -> Result<()>,
    ) -> Result<Vec<Vec<f32>>> {
        // Characters stand in for tokens, which are only known once a group is tokenized.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let encode_group = |group: &[usize]| -> Result<Vec<(usize, Encoding)>> {
            let mut encoded = group
                .iter()
                .map(|&i| Ok((i, encode(&self.tokenizer, &texts[i])?)))
                .collect::<Result<Vec<_>>>()?;
            encoded.sort_by_key(|(_, e)| e.ids.len());
            Ok(encoded)
        };
        let mut groups = order.chunks(BATCH_TEXTS);
        let mut next = groups.next().map(encode_group).transpose()?;
        let mut rows = vec![Vec::new(); texts.len()];
        let mut done = 0;
        while let Some(encoded) = next {
            done += encoded.len();
            let pooled: Vec<(Vec<usize>, Tensor<2>)> = batches(encoded, &self.shape)
                .into_iter()
                .map(|batch| {
                    let (indices, encodings): (Vec<usize>, Vec<Encoding>) =
                        batch.into_iter().unzip();
                    let batch = Batch::new(&encodings, self.pad_id, &self.device);
                    let hidden = self.model.forward(&batch);
                    (
                        indices,
                        pool(hidden, batch.attention_mask, pooling, normalize),
                    )
                })
                .collect();
            // A GPU runs this group while the CPU tokenizes the next (tokenizing 32 texts of 128 tokens
            // took as long as their forward pass on an H100).
            self.device
                .flush()
                .map_err(|e| Error::Device(format!("submitting the work failed: {e:?}")))?;
            next = groups.next().map(encode_group).transpose()?;
            for (indices, pooled) in pooled {
                let width = pooled.dims()[1];
                for (i, row) in indices
                    .into_iter()
                    .zip(read(pooled).await?.chunks_exact(width))
                {
                    rows[i] = row.to_vec();
                }
            }
            progress(done, texts.len()).await?;
        }
        Ok(rows)
    }
}

impl FillMask {
    /// A `BertForMaskedLM` checkpoint (`cls.predictions.*` required).
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let head = Layout::of(files.config.architecture).mlm.dense;
        let model = load_bert_for_masked_lm(&files.checkpoint, &files.config, &device).map_err(|e| match e {
            Error::Weights(msg) if msg.contains(head) => Error::Weights(format!(
                "{msg}: fill-mask needs a masked-LM checkpoint (…ForMaskedLM), not a bare encoder or a classifier"
            )),
            other => other,
        })?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
        })
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

        let batch = Batch::new(std::slice::from_ref(&encoding), self.pad_id, &self.device);
        let hidden = self.model.bert.forward(&batch);
        let [_, seq, width] = hidden.dims();
        let hidden = hidden.reshape([seq, width]);
        // Only the masked positions go through the head: the decoder onto the vocabulary is the costly
        // part. Their logits in pieces under BATCH_BYTES; per mask the k probabilities, then the k ids.
        let rows_per_read = (BATCH_BYTES / (4 * self.shape.vocab_size)).max(1);
        let mut best = Vec::with_capacity(positions.len() * 2 * top_k);
        for rows in positions.chunks(rows_per_read) {
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(rows.to_vec(), [rows.len()]),
                &self.device,
            );
            let logits = self.model.head(hidden.clone().select(0, index));
            best.extend(read(softmax_top_k(logits, top_k)).await?);
        }

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
}

/// A label and its score (softmax or sigmoid of the logits, as the checkpoint's `problem_type` says).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub label: String,
    pub score: f32,
}

/// A passage's place in a reranking: its index in the input, its relevance score and its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub index: usize,
    pub score: f32,
    pub text: String,
}

/// One input of a classifier: a text, or a pair read together (`[CLS] a [SEP] b [SEP]`).
pub type TextInput<'a> = (&'a str, Option<&'a str>);

impl Classifier {
    /// A `*ForSequenceClassification` checkpoint, its labels from `id2label`.
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model =
            load_bert_for_sequence_classification(&files.checkpoint, &files.config, &device)
                .map_err(|e| with_hint(e, "text classification", "ForSequenceClassification"))?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
        })
    }

    /// The classifier's raw output for each input, in input order (inputs batched by length).
    pub async fn logits(&self, inputs: &[TextInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let mut encoded = inputs
            .iter()
            .enumerate()
            .map(|(i, (a, b))| {
                let encoding = match b {
                    None => encode(&self.tokenizer, a)?,
                    Some(b) => self.tokenizer.encode_pair(a, b)?,
                };
                Ok((i, encoding))
            })
            .collect::<Result<Vec<_>>>()?;
        encoded.sort_by_key(|(_, e)| e.ids.len());
        let mut rows = vec![Vec::new(); inputs.len()];
        for batch in batches(encoded, &self.shape) {
            let (indices, encodings): (Vec<usize>, Vec<Encoding>) = batch.into_iter().unzip();
            let batch = Batch::new(&encodings, self.pad_id, &self.device);
            let logits = self.model.forward(&batch);
            let labels = logits.dims()[1];
            for (i, row) in indices
                .into_iter()
                .zip(read(logits).await?.chunks_exact(labels))
            {
                rows[i] = row.to_vec();
            }
        }
        Ok(rows)
    }

    /// Per input, the `top_k` likeliest labels, best first (as the `text-classification` pipeline).
    pub async fn classify(
        &self,
        inputs: &[TextInput<'_>],
        top_k: usize,
    ) -> Result<Vec<Vec<Label>>> {
        let labels = &self.model.classifier.labels;
        let logits = self.logits(inputs).await?;
        Ok(logits
            .into_iter()
            .map(|row| {
                let mut scored: Vec<Label> = scores(&row, self.model.classifier.score_function)
                    .into_iter()
                    .zip(labels)
                    .map(|(score, label)| Label {
                        label: label.clone(),
                        score,
                    })
                    .collect();
                scored.sort_by(|a, b| b.score.total_cmp(&a.score));
                scored.truncate(top_k);
                scored
            })
            .collect())
    }

    /// `passages` by relevance to `query`, best first, the `top_k` best: a cross-encoder reads each
    /// (query, passage) pair; the score is the last label's (a reranker's single logit, through a sigmoid).
    pub async fn rerank(
        &self,
        query: &str,
        passages: &[String],
        top_k: usize,
    ) -> Result<Vec<Ranked>> {
        let pairs: Vec<TextInput> = passages.iter().map(|p| (query, Some(p.as_str()))).collect();
        let logits = self.logits(&pairs).await?;
        let mut ranked: Vec<Ranked> = logits
            .iter()
            .zip(passages)
            .enumerate()
            .map(|(index, (row, text))| Ranked {
                index,
                score: *scores(row, self.model.classifier.score_function)
                    .last()
                    .expect("a classifier has at least one label"),
                text: text.clone(),
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        ranked.truncate(top_k);
        Ok(ranked)
    }
}

/// Logits to scores, in f32 as the pipeline computes them.
fn scores(logits: &[f32], function: ScoreFunction) -> Vec<f32> {
    match function {
        ScoreFunction::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        }
        ScoreFunction::Sigmoid => logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
        ScoreFunction::None => logits.to_vec(),
    }
}

/// How a token classifier's per-token labels become entities (the pipeline's `aggregation_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// One entity per token whose best label is not `O`.
    None,
    /// Adjacent tokens of one entity type (`B-PER I-PER …`) grouped into one entity.
    Simple,
}

impl std::str::FromStr for Aggregation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Aggregation::None),
            "simple" => Ok(Aggregation::Simple),
            other => Err(Error::Input(format!(
                "aggregation must be \"none\" or \"simple\", not {other:?}"
            ))),
        }
    }
}

/// A named entity: a token (`entity`, `index`) or a group of tokens (`entity_group`), with its score and
/// `[start, end)` in characters of the text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    pub score: f32,
    /// The token's position in the encoding (special tokens counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// The label that entities carry and that the pipeline leaves out.
const OUTSIDE: &str = "O";

impl TokenClassifier {
    /// A `*ForTokenClassification` checkpoint, its labels from `id2label`.
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert_for_token_classification(&files.checkpoint, &files.config, &device)
            .map_err(|e| with_hint(e, "token classification", "ForTokenClassification"))?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
        })
    }

    /// The encoding of `text` and its logits per token, `[tokens][labels]`.
    pub async fn logits(&self, text: &str) -> Result<(Encoding, Vec<Vec<f32>>)> {
        let encoding = encode(&self.tokenizer, text)?;
        let batch = Batch::new(std::slice::from_ref(&encoding), self.pad_id, &self.device);
        let logits = self.model.forward(&batch);
        let [_, seq, labels] = logits.dims();
        let values = read(logits.reshape([seq, labels])).await?;
        Ok((
            encoding,
            values.chunks_exact(labels).map(<[f32]>::to_vec).collect(),
        ))
    }

    /// The entities in `text`, as transformers' `token-classification` pipeline finds them: each token's
    /// likeliest label (softmax over the labels), special tokens and `O` left out, grouped by `aggregation`.
    pub async fn entities(&self, text: &str, aggregation: Aggregation) -> Result<Vec<Entity>> {
        let (encoding, logits) = self.logits(text).await?;
        let chars: Vec<char> = text.chars().collect();
        let unk = self.tokenizer.unk_token_id();
        let tokens: Vec<Entity> = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| !encoding.special[*i])
            .map(|(i, row)| {
                let scores = scores(row, ScoreFunction::Softmax);
                let (best, score) =
                    scores
                        .iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (j, &s)| if s > b.1 { (j, s) } else { b },
                        );
                let (start, end) = encoding.offsets[i];
                // An unknown token reads as the text it stands for.
                let word = match Some(encoding.ids[i]) == unk {
                    true => chars[start..end].iter().collect(),
                    false => encoding.tokens[i].clone(),
                };
                Entity {
                    entity: Some(self.model.labels[best].clone()),
                    entity_group: None,
                    score,
                    index: Some(i),
                    word,
                    start,
                    end,
                }
            })
            .collect();
        let entities = match aggregation {
            Aggregation::None => tokens,
            Aggregation::Simple => self.group(tokens),
        };
        let outside =
            |e: &Entity| e.entity.as_deref().or(e.entity_group.as_deref()) == Some(OUTSIDE);
        Ok(entities.into_iter().filter(|e| !outside(e)).collect())
    }

    /// Runs of tokens of one type, each run's score their mean, its word their tokens joined by the
    /// decoder. A `B-` tag, or a change of type, starts a new run (`O` tokens make runs of their own).
    fn group(&self, tokens: Vec<Entity>) -> Vec<Entity> {
        // `B-PER` → (true, "PER"); a label without a prefix continues a run of its own type.
        let tag = |e: &Entity| {
            let label = e.entity.as_deref().unwrap_or_default();
            match label.split_once('-') {
                Some(("B", tag)) => (true, tag.to_string()),
                Some(("I", tag)) => (false, tag.to_string()),
                _ => (false, label.to_string()),
            }
        };
        let mut runs: Vec<Vec<Entity>> = Vec::new();
        for token in tokens {
            match runs.last_mut() {
                Some(run)
                    if {
                        let (begins, kind) = tag(&token);
                        !begins && kind == tag(&run[run.len() - 1]).1
                    } =>
                {
                    run.push(token)
                }
                _ => runs.push(vec![token]),
            }
        }
        runs.into_iter()
            .map(|run| {
                let label = run[0].entity.as_deref().unwrap_or_default();
                let group = label.split_once('-').map_or(label, |(_, tag)| tag);
                let words: Vec<String> = run.iter().map(|e| e.word.clone()).collect();
                Entity {
                    entity: None,
                    entity_group: Some(group.to_string()),
                    score: run.iter().map(|e| e.score).sum::<f32>() / run.len() as f32,
                    index: None,
                    word: self.tokenizer.tokens_to_string(&words),
                    start: run[0].start,
                    end: run[run.len() - 1].end,
                }
            })
            .collect()
    }
}

/// An answer span: its score, `[start, end)` in characters of the context, and its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub score: f32,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

/// The question-answering pipeline's settings, its defaults from [`QaOptions::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QaOptions {
    pub top_k: usize,
    /// Most tokens in an answer.
    pub max_answer_len: usize,
    /// Most tokens per chunk of question + context.
    pub max_seq_len: usize,
    /// Context tokens each chunk repeats from the one before.
    pub doc_stride: usize,
}

impl QaOptions {
    /// transformers' defaults: one answer of at most 15 tokens, chunks of up to 384 tokens (fewer if
    /// the model has fewer positions) overlapping by up to 128.
    pub fn new(model_max_len: usize) -> Self {
        let max_seq_len = model_max_len.min(384);
        Self {
            top_k: 1,
            max_answer_len: 15,
            max_seq_len,
            doc_stride: (max_seq_len / 2).min(128),
        }
    }
}

/// Start and end logits of one chunk's tokens.
pub struct SpanLogits {
    pub start: Vec<f32>,
    pub end: Vec<f32>,
}

impl QuestionAnswerer {
    /// A `*ForQuestionAnswering` checkpoint.
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device).
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert_for_question_answering(&files.checkpoint, &files.config, &device)
            .map_err(|e| with_hint(e, "question answering", "ForQuestionAnswering"))?;
        Ok(Self {
            tokenizer: files.tokenizer.clone(),
            model,
            device,
            pad_id: files.config.pad_token_id as u32,
            shape: Shape::of(&files.config),
            sentence: files.sentence,
        })
    }

    /// The chunks of (question, context) and each one's start and end logits.
    pub async fn logits(
        &self,
        question: &str,
        context: &str,
        options: &QaOptions,
    ) -> Result<(Vec<Span>, Vec<SpanLogits>)> {
        if question.trim().is_empty() || context.trim().is_empty() {
            return Err(Error::Input(
                "the question and the context must not be empty".into(),
            ));
        }
        let max = self.tokenizer.max_len();
        if options.max_seq_len > max || options.doc_stride >= options.max_seq_len {
            return Err(Error::Input(format!(
                "maxSeqLen must be at most the model's {max} positions and docStride below it, not {} and {}",
                options.max_seq_len, options.doc_stride
            )));
        }
        let spans = self.tokenizer.encode_spans(
            question,
            context,
            options.max_seq_len,
            options.doc_stride,
        )?;
        let mut logits = Vec::with_capacity(spans.len());
        let indexed: Vec<(usize, Encoding)> = spans
            .iter()
            .map(|s| s.encoding.clone())
            .enumerate()
            .collect();
        for batch in batches(indexed, &self.shape) {
            let encodings: Vec<Encoding> = batch.into_iter().map(|(_, e)| e).collect();
            let tensors = Batch::new(&encodings, self.pad_id, &self.device);
            let output = self.model.forward(&tensors);
            let [rows, seq, _] = output.dims();
            let values = read(output.reshape([rows * seq, 2])).await?;
            for (row, encoding) in values.chunks_exact(2 * seq).zip(&encodings) {
                let tokens = &row[..2 * encoding.ids.len()];
                logits.push(SpanLogits {
                    start: tokens.iter().step_by(2).copied().collect(),
                    end: tokens.iter().skip(1).step_by(2).copied().collect(),
                });
            }
        }
        Ok((spans, logits))
    }

    /// The `top_k` likeliest answers to `question` in `context`, best first, as transformers'
    /// `question-answering` pipeline found them (transformers 4.57; 5.x dropped it): per chunk, softmax
    /// over the context tokens (and `[CLS]`) of the start and of the end logits, a span's score their
    /// product, spans of at most `max_answer_len` tokens, widened to whole words; the same answer found
    /// twice scores the sum.
    pub async fn answer(
        &self,
        question: &str,
        context: &str,
        options: &QaOptions,
    ) -> Result<Vec<Answer>> {
        if options.top_k == 0 || options.max_answer_len == 0 {
            return Err(Error::Input(
                "topK and maxAnswerLen must be at least 1".into(),
            ));
        }
        let (spans, logits) = self.logits(question, context, options).await?;
        let chars: Vec<char> = context.chars().collect();
        let cls = self.tokenizer.cls_token_id();
        let mut answers = Vec::new();
        for (span, logits) in spans.iter().zip(&logits) {
            let len = span.encoding.ids.len();
            // The context's tokens, and [CLS] (models mark "no answer" there), take part in the softmax.
            let allowed: Vec<bool> = (0..len)
                .map(|i| span.in_context[i] || Some(span.encoding.ids[i]) == cls)
                .collect();
            let probabilities = |logits: &[f32]| {
                let masked: Vec<f32> = logits
                    .iter()
                    .zip(&allowed)
                    .map(|(&x, &ok)| if ok { x } else { -10000.0 })
                    .collect();
                let mut p = scores(&masked, ScoreFunction::Softmax);
                // [CLS] is never an answer here (the pipeline's `handle_impossible_answer` is off).
                p[0] = 0.0;
                p
            };
            let (start, end) = (probabilities(&logits.start), probabilities(&logits.end));
            let mut candidates = Vec::new();
            for s in (0..len).filter(|&s| span.in_context[s]) {
                for e in (s..len.min(s + options.max_answer_len)).filter(|&e| span.in_context[e]) {
                    candidates.push((start[s] * end[e], s, e));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            // Spans widened to whole words can coincide: more candidates than asked for, and one answer
            // per text (case aside), its score the sum of theirs.
            for &(score, s, e) in candidates.iter().take(2 * options.top_k + 10) {
                let (from, to) = match (span.words[s], span.words[e]) {
                    (Some(first), Some(last)) => (first.0, last.1),
                    _ => (span.encoding.offsets[s].0, span.encoding.offsets[e].1),
                };
                let answer: String = chars[from..to].iter().collect();
                let same = answers
                    .iter_mut()
                    .find(|a: &&mut Answer| a.answer.to_lowercase() == answer.to_lowercase());
                match same {
                    Some(same) => same.score += score,
                    None => answers.push(Answer {
                        score,
                        start: from,
                        end: to,
                        answer,
                    }),
                }
            }
        }
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(options.top_k);
        Ok(answers)
    }
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
        tokens: encoding.tokens,
        offsets: encoding.offsets,
        num_layers,
        num_heads,
        weights,
        truncated: encoding.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(len: usize) -> Encoding {
        Encoding {
            ids: vec![0; len],
            token_type_ids: vec![0; len],
            tokens: vec![String::new(); len],
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
            vocab_size: 30522,
        };
        let lengths: Vec<usize> = [vec![8; 40], vec![200; 9], vec![512; 12]].concat();
        let sorted: Vec<(usize, Encoding)> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| (i, encoding(n)))
            .collect();
        let batches = batches(sorted, &shape);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [32, 17, 5, 5, 2]);
        let order: Vec<usize> = batches.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &batches {
            let seq = batch.iter().map(|(_, e)| e.ids.len()).max().unwrap();
            let scores = 4 * batch.len() * shape.num_heads * seq * seq;
            let inner = 4 * batch.len() * seq * shape.width;
            assert!(batch.len() == 1 || scores.max(inner) <= BATCH_BYTES);
        }
    }
}
