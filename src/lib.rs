//! webbert: BERT-family encoders on burn, the same code natively and in the browser (WebGPU).
//!
//! Data flows one way: [`tokenizer`] → [`model`] (embeddings, then layers of attention and feed-forward,
//! then a head) → [`pipelines`]; the hot operations run through [`ops`] (our kernels on the GPU and the
//! browser's CPU path). [`io`] builds the model from Hugging Face files; `bindings` (wasm) are the JavaScript
//! API. Natively, [`train`] fits the masked-LM head and encoder with BERT's recipe.

pub mod backend;
#[cfg(target_arch = "wasm32")]
pub mod bindings;
pub mod error;
pub mod io;
pub mod model;
pub mod ops;
pub mod pipelines;
pub mod tokenizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use backend::Backend;
pub use error::{Error, Result};
pub use io::checkpoint::Checkpoint;
pub use io::source::{ModelFiles, TokenizerFiles, WeightsDtype};
pub use model::config::{Architecture, BertConfig};
pub use model::heads::Pooling;
pub use pipelines::{
    Aggregation, Answer, AttentionOutput, Classifier, Embedder, Entity, FillMask, FillMaskOutput,
    Label, Prediction, QaOptions, QuestionAnswerer, Ranked, TokenClassifier,
};
pub use tokenizer::{Encoding, Tokenizer};
