//! Extractive question answering: the likeliest spans of a context, chunked with a stride when long.

use burn::tensor::Device;
use serde::Serialize;

use super::classification::scores;
use super::{Pipeline, batches, read_one_ahead, with_hint};
use crate::error::{Error, Result};
use crate::io::source::ModelFiles;
use crate::io::weights::load_bert_for_question_answering;
use crate::model::Batch;
use crate::model::config::ScoreFunction;
use crate::model::heads::BertForQuestionAnswering;
use crate::tokenizer::{Encoding, Span};

pub type QuestionAnswerer = Pipeline<BertForQuestionAnswering>;

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
        Ok(Self::with(files, files.tokenizer.clone(), model, device))
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
        let indexed: Vec<(usize, Encoding)> = spans
            .iter()
            .map(|s| s.encoding.clone())
            .enumerate()
            .collect();
        let launches = batches(indexed, &self.shape).into_iter().map(|batch| {
            let encodings: Vec<Encoding> = batch.into_iter().map(|(_, e)| e).collect();
            let data = self.batch_data(&encodings);
            let [_, seq] = data.dims();
            let output = self.replays.run(
                "question-answering",
                [0, 0],
                &data,
                &self.device,
                |batch: &Batch| self.model.forward(batch).flatten(0, 1),
            );
            Ok(((encodings, seq), output.start_read()))
        });
        let mut logits = Vec::with_capacity(spans.len());
        read_one_ahead(
            launches,
            async |(encodings, seq): (Vec<Encoding>, usize), values| {
                for (row, encoding) in values.chunks_exact(2 * seq).zip(&encodings) {
                    let tokens = &row[..2 * encoding.ids.len()];
                    logits.push(SpanLogits {
                        start: tokens.iter().step_by(2).copied().collect(),
                        end: tokens.iter().skip(1).step_by(2).copied().collect(),
                    });
                }
                Ok(())
            },
        )
        .await?;
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
                let key = answer.to_lowercase();
                let same = answers
                    .iter_mut()
                    .find(|a: &&mut Answer| a.answer.to_lowercase() == key);
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
