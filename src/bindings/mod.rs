//! The JavaScript side (wasm only): the `Model` class (`wasm.rs`), the task it was loaded for (`task.rs`)
//! and where it runs (`placement.rs`), and fetching a model by URL (`web.rs`).

mod placement;
mod task;
pub mod wasm;
pub mod web;
