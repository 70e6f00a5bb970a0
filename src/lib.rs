//! webbert: BERT-family encoders on burn, the same code natively and in the browser (WebGPU).
//!
//! Data flows one way: [`tokenizer`] → [`model`] ([`embeddings`], [`layer`] ∘ [`attention`]) → [`heads`]
//! → [`pipelines`]; the hot operations run through [`ops`] (our kernels on the GPU and the browser's CPU path). [`weights`] and [`source`] build the model from Hugging Face files. Natively,
//! [`train`] fits the masked-LM head and encoder with BERT's recipe ([`masking`]).

pub mod attention;
pub mod backend;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod heads;
pub mod jsonl;
pub mod layer;
#[cfg(not(target_arch = "wasm32"))]
pub mod masking;
pub mod model;
pub mod ops;
pub mod pipelines;
#[cfg(not(target_arch = "wasm32"))]
pub mod quantize;
pub mod source;
pub mod tokenizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod wasm;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weights;

pub use backend::Backend;
pub use config::BertConfig;
pub use error::{Error, Result};
pub use heads::Pooling;
pub use pipelines::{AttentionOutput, Embedder, FillMask, FillMaskOutput, Prediction};
pub use source::{ModelFiles, TokenizerFiles, WeightsDtype};
pub use tokenizer::{Encoding, Tokenizer};
pub use weights::Checkpoint;
