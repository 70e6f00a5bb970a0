//! The JavaScript side (wasm only): the `Model` class and fetching a model by URL.

pub mod wasm;
pub mod web;
