//! Model files in, model files out: Hugging Face layout, safetensors checkpoints, JSON Lines of texts,
//! and the smaller weight variants `webbert quantize` writes.

pub mod checkpoint;
pub mod jsonl;
pub mod layout;
#[cfg(not(target_arch = "wasm32"))]
pub mod quantize;
pub mod source;
pub mod weights;
