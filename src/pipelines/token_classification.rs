//! Named entities: each token's likeliest label, or runs of one entity type grouped.

use burn::tensor::Device;
use serde::Serialize;

use super::classification::scores;
use super::{Pipeline, encode, with_hint};
use crate::error::{Error, Result};
use crate::io::source::ModelFiles;
use crate::io::weights::load_bert_for_token_classification;
use crate::model::Batch;
use crate::model::config::ScoreFunction;
use crate::model::heads::BertForTokenClassification;
use crate::tokenizer::Encoding;

pub type TokenClassifier = Pipeline<BertForTokenClassification>;

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
        Ok(Self::with(files, files.tokenizer.clone(), model, device))
    }

    /// The encoding of `text` and its logits per token, `[tokens][labels]`.
    pub async fn logits(&self, text: &str) -> Result<(Encoding, Vec<Vec<f32>>)> {
        let encoding = encode(&self.tokenizer, text)?;
        let data = self.batch_data(std::slice::from_ref(&encoding));
        let logits = self.replays.run(
            "token-classification",
            [0, 0],
            &data,
            &self.device,
            |batch: &Batch| self.model.forward(batch).flatten(0, 1),
        );
        let [_, seq] = data.dims();
        let values = logits.read().await?;
        // The text's tokens, not the padding after them.
        let rows = values
            .chunks_exact(values.len() / seq)
            .take(encoding.ids.len())
            .map(<[f32]>::to_vec)
            .collect();
        Ok((encoding, rows))
    }

    /// The entities in `text`, as transformers' `token-classification` pipeline finds them: each token's
    /// likeliest label (softmax over the labels), special tokens and `O` left out, grouped by `aggregation`.
    pub async fn entities(&self, text: &str, aggregation: Aggregation) -> Result<Vec<Entity>> {
        let (encoding, logits) = self.logits(text).await?;
        let chars: Vec<char> = text.chars().collect();
        let unk = self.tokenizer.unk_token_id();
        let words = self.tokenizer.ids_to_tokens(&encoding.ids);
        let tokens: Vec<Entity> = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| !encoding.special[*i])
            .map(|(i, row)| {
                let scores = scores(row, ScoreFunction::Softmax);
                // The first of equal bests, as numpy's argmax.
                let best =
                    (0..scores.len()).fold(0, |b, j| if scores[j] > scores[b] { j } else { b });
                let score = scores[best];
                let (start, end) = encoding.offsets[i];
                // An unknown token reads as the text it stands for.
                let word = match Some(encoding.ids[i]) == unk {
                    true => chars[start..end].iter().collect(),
                    false => words[i].clone(),
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
            let (begins, kind) = tag(&token);
            match runs.last_mut() {
                Some(run) if !begins && tag(&run[run.len() - 1]).1 == kind => run.push(token),
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
