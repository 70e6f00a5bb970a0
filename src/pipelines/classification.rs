//! Text classification of texts and pairs, and reranking passages with a cross-encoder.

use burn::tensor::Device;
use serde::Serialize;

use super::{Pipeline, batches, encode, read_one_ahead, with_hint};
use crate::error::Result;
use crate::io::source::ModelFiles;
use crate::io::weights::load_bert_for_sequence_classification;
use crate::model::Batch;
use crate::model::config::ScoreFunction;
use crate::model::heads::BertForSequenceClassification;
use crate::tokenizer::Encoding;

pub type Classifier = Pipeline<BertForSequenceClassification>;

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
        Ok(Self::with(files, files.tokenizer.clone(), model, device))
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
        let launches = batches(encoded, &self.shape).into_iter().map(|batch| {
            let (indices, encodings): (Vec<usize>, Vec<Encoding>) = batch.into_iter().unzip();
            let data = self.batch_data(&encodings);
            let logits =
                self.replays
                    .run("classify", [0, 0], &data, &self.device, |batch: &Batch| {
                        self.model.forward(batch)
                    });
            Ok((indices, logits.start_read()))
        });
        let mut rows = vec![Vec::new(); inputs.len()];
        read_one_ahead(launches, async |indices: Vec<usize>, values: Vec<f32>| {
            let labels = values.len() / indices.len();
            for (i, row) in indices.into_iter().zip(values.chunks_exact(labels)) {
                rows[i] = row.to_vec();
            }
            Ok(())
        })
        .await?;
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
pub(super) fn scores(logits: &[f32], function: ScoreFunction) -> Vec<f32> {
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
