//! The two held-out tests: 15% of each passage's tokens masked, and one content word per sentence
//! (see [`content_words`]).

use std::path::Path;

use burn::tensor::Device;

use super::corpus::Corpus;
use super::loss::{masked_logits, prepare};
use super::{ints, step_rng, vocabulary};
use crate::error::Error;
use crate::io::source::ModelFiles;
use crate::io::weights;
use crate::model::heads::BertForMaskedLM;
use crate::tokenizer::Tokenizer;
use crate::train::content_words::{self, ContentWordAccuracy, Example};
use crate::train::masking::{MaskedSequence, MaskingConfig, Vocabulary};

/// Held-out text, read two ways: its passages with 15% of the tokens masked, and its sentences with one
/// content word masked (see [`content_words`]).
pub struct Heldout {
    passages: Corpus,
    words: Vec<Example>,
}

/// Both held-out tests.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Evaluation {
    pub masked_tokens: Accuracy,
    pub content_words: ContentWordAccuracy,
}

impl Heldout {
    pub fn from_text(
        text: &str,
        tokenizer: &Tokenizer,
        max_len: usize,
        seed: u64,
    ) -> crate::Result<Self> {
        let sentences = content_words::sentences(text);
        Ok(Self {
            passages: Corpus::from_text(text, tokenizer, max_len)?,
            words: content_words::examples(&sentences, tokenizer, seed)?,
        })
    }

    /// On every passage and sentence, or on the first `limit` passages and `limit` sentences spread
    /// over the file.
    pub fn evaluate(
        &self,
        model: &BertForMaskedLM,
        files: &ModelFiles,
        vocab: &Vocabulary,
        seed: u64,
        limit: Option<usize>,
        device: &Device,
    ) -> crate::Result<Evaluation> {
        let passages = &self.passages.sequences;
        let passages = &passages[..limit.unwrap_or(passages.len()).min(passages.len())];
        let words: Vec<Example> = match limit {
            Some(n) if n < self.words.len() => (0..n)
                .map(|i| self.words[i * self.words.len() / n].clone())
                .collect(),
            _ => self.words.clone(),
        };
        let pad_id = files.config.pad_token_id as u32;
        Ok(Evaluation {
            masked_tokens: evaluate(model, passages, vocab, pad_id, seed, device)?,
            content_words: content_words::evaluate(
                model,
                &words,
                &files.tokenizer,
                pad_id,
                device,
            )?,
        })
    }
}

/// Masked-token accuracy: how often the original token is the top prediction, or among the top 5.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub predictions: usize,
}

/// Top-1/top-5 over `sequences` with 15% of tokens chosen and all of them replaced by `[MASK]`;
/// deterministic under `seed`.
pub fn evaluate(
    model: &BertForMaskedLM,
    sequences: &[Vec<u32>],
    vocab: &Vocabulary,
    pad_id: u32,
    seed: u64,
    device: &Device,
) -> crate::Result<Accuracy> {
    let masking = MaskingConfig::new()
        .with_whole_word(false)
        .with_mask_probability(1.0)
        .with_random_probability(0.0);
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    for (i, chunk) in sequences.chunks(64).enumerate() {
        let masked = masking.apply(chunk, vocab, &mut step_rng(seed, i));
        for (best, label) in best_five(model, &masked, pad_id, device)? {
            top1 += usize::from(best[0] == label);
            top5 += usize::from(best.contains(&label));
            n += 1;
        }
    }
    Ok(Accuracy {
        top1: top1 as f64 / n.max(1) as f64,
        top5: top5 as f64 / n.max(1) as f64,
        predictions: n,
    })
}

/// At each masked position of a batch, the five likeliest tokens (best first) and the original token.
pub(crate) fn best_five(
    model: &BertForMaskedLM,
    masked: &[MaskedSequence],
    pad_id: u32,
    device: &Device,
) -> crate::Result<Vec<(Vec<i64>, i64)>> {
    let (batch, targets) = prepare(masked, pad_id, device);
    let (_, best) = masked_logits(model, &batch, &targets).topk_with_indices(5, 1);
    let labels = ints(targets.labels)?;
    Ok(ints(best)?
        .chunks_exact(5)
        .map(<[i64]>::to_vec)
        .zip(labels)
        .collect())
}

/// Both held-out tests for a model folder and a text file (one passage per line).
pub fn evaluate_dir(
    model_dir: &Path,
    text: &Path,
    seed: u64,
    limit: Option<usize>,
    device: &Device,
) -> crate::Result<Evaluation> {
    let files = ModelFiles::from_dir(model_dir)?;
    let model = weights::load_bert_for_masked_lm(&files.checkpoint, &files.config, device)?;
    let text =
        std::fs::read_to_string(text).map_err(|e| Error::Io(format!("{}: {e}", text.display())))?;
    let max_len = files.config.max_position_embeddings.min(128);
    let vocab = vocabulary(&files)?;
    Heldout::from_text(&text, &files.tokenizer, max_len, seed)?
        .evaluate(&model, &files, &vocab, seed, limit, device)
}
