//! A loaded model's pipeline, whichever of the five tasks it was loaded for.

use crate::error::{Error, Result};
use crate::io::source::ModelFiles;
use crate::pipelines::{Classifier, Embedder, FillMask, QuestionAnswerer, Timing, TokenClassifier};
use crate::tokenizer::Tokenizer;

// One per loaded model: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Task {
    Embeddings(Embedder),
    FillMask(FillMask),
    TextClassification(Classifier),
    TokenClassification(TokenClassifier),
    QuestionAnswering(QuestionAnswerer),
}

impl Task {
    pub(super) fn load(
        task: &str,
        files: &ModelFiles,
        device: burn::tensor::Device,
    ) -> Result<Self> {
        match task {
            "embeddings" => Ok(Task::Embeddings(Embedder::load_from(files, device)?)),
            "fill-mask" => Ok(Task::FillMask(FillMask::load_from(files, device)?)),
            "text-classification" => Ok(Task::TextClassification(Classifier::load_from(
                files, device,
            )?)),
            "token-classification" => Ok(Task::TokenClassification(TokenClassifier::load_from(
                files, device,
            )?)),
            "question-answering" => Ok(Task::QuestionAnswering(QuestionAnswerer::load_from(
                files, device,
            )?)),
            other => Err(Error::Input(format!(
                "task must be 'embeddings', 'fill-mask', 'text-classification', \
                 'token-classification' or 'question-answering', not {other:?}"
            ))),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Task::Embeddings(_) => "embeddings (Embedder)",
            Task::FillMask(_) => "fill-mask (FillMask)",
            Task::TextClassification(_) => "text classification (Classifier)",
            Task::TokenClassification(_) => "token classification (TokenClassifier)",
            Task::QuestionAnswering(_) => "question answering (QuestionAnswerer)",
        }
    }

    pub(super) fn tokenizer(&self) -> &Tokenizer {
        match self {
            Task::Embeddings(p) => &p.tokenizer,
            Task::FillMask(p) => &p.tokenizer,
            Task::TextClassification(p) => &p.tokenizer,
            Task::TokenClassification(p) => &p.tokenizer,
            Task::QuestionAnswering(p) => &p.tokenizer,
        }
    }

    pub(super) async fn timing(&self, tokens: usize) -> Result<Timing> {
        match self {
            Task::Embeddings(p) => p.timing(tokens).await,
            Task::FillMask(p) => p.timing(tokens).await,
            Task::TextClassification(p) => p.timing(tokens).await,
            Task::TokenClassification(p) => p.timing(tokens).await,
            Task::QuestionAnswering(p) => p.timing(tokens).await,
        }
    }
}

/// A call that the loaded task cannot answer.
pub(super) fn wrong_task(task: &Task, wanted: &str) -> Error {
    Error::Input(format!(
        "this model was loaded for {}; load it with {wanted} for this call",
        task.name()
    ))
}
