//! Smaller weights for download (`webbert quantize`): the f16 or int8 variant of a model, written beside
//! its files only if its sentence embeddings stay within [`FP16_MIN_COSINE`] or [`Q8_MIN_COSINE`] of the
//! original's.

use std::path::Path;

use burn::tensor::Device;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::source::{FP16_WEIGHTS, ModelFiles, Q8_WEIGHTS, WeightsDtype};
use crate::model::heads::Pooling;
use crate::pipelines::Embedder;

/// The least cosine between a sentence's f16 and f32 embeddings that the f16 variant may have.
pub const FP16_MIN_COSINE: f32 = 0.9999;
/// The same for the int8 variant (transformers.js' q8 reached 0.986-0.996 in our measurements).
pub const Q8_MIN_COSINE: f32 = 0.999;

/// What the guard embeds: short and long, plain and odd (numbers, accents, CJK, code, a mask).
pub const GUARD_SENTENCES: [&str; 10] = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the [MASK] of France.",
    "Café au lait, crème brûlée and a naïve façade.",
    "東京は日本の首都です。",
    "fn main() { println!(\"hello, world\"); }",
    "In 1969, 3 astronauts flew 384,400 km to the Moon and back.",
    "?!",
    "Machine learning models are trained on large datasets to recognise patterns, and the resulting \
     weights are then shipped to browsers, phones and servers, where every megabyte of download matters \
     to the person waiting for the page.",
    "Whereof one cannot speak, thereof one must be silent.",
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub bytes: usize,
    /// The published weights' size, for comparison.
    pub original_bytes: usize,
    /// The least cosine over [`GUARD_SENTENCES`] between the variant's embeddings and the original's.
    pub min_cosine: f32,
}

/// Writes `out/model.fp16.safetensors` from the model in `model` (and copies its other files when `out` is
/// another folder). Refused, with nothing written, if the guard's cosine falls below
/// [`FP16_MIN_COSINE`].
pub fn quantize_fp16(model: &Path, out: &Path, device: &Device) -> Result<Report> {
    quantize(model, out, WeightsDtype::Fp16, device)
}

/// Writes the `dtype` variant (`Fp16` or `Q8`) of the model in `model` into `out` (copying its other files
/// when `out` is another folder); refused, with nothing written, below the guard's cosine.
pub fn quantize(model: &Path, out: &Path, dtype: WeightsDtype, device: &Device) -> Result<Report> {
    let io = |path: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    let original = ModelFiles::from_dir(model)?;
    let original_bytes = original.checkpoint.byte_len();
    let (name, bytes, least) = match dtype {
        WeightsDtype::Fp16 => (FP16_WEIGHTS, original.checkpoint.to_f16()?, FP16_MIN_COSINE),
        WeightsDtype::Q8 => (Q8_WEIGHTS, original.checkpoint.to_q8()?, Q8_MIN_COSINE),
        other => {
            return Err(Error::Input(format!(
                "--dtype must be fp16 or q8, not {other:?}"
            )));
        }
    };
    let variant = ModelFiles::from_lookup(dtype, |file| match file {
        file if file == name => Ok(Some(bytes.clone())),
        file => crate::io::source::read_optional(&model.join(file)),
    })?;
    let min_cosine = min_cosine(original, variant, device)?;
    if min_cosine < least {
        return Err(Error::Weights(format!(
            "the {name} weights' embeddings reach a cosine of only {min_cosine} to the original's \
             (at least {least} is needed): keep this model in higher precision"
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    if out.canonicalize().ok() != model.canonicalize().ok() {
        for entry in std::fs::read_dir(model).map_err(|e| io(model, e))? {
            let path = entry.map_err(|e| io(model, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let weights =
                name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json");
            if path.is_file() && !weights {
                std::fs::copy(&path, out.join(path.file_name().unwrap_or_default()))
                    .map_err(|e| io(&path, e))?;
            }
        }
    }
    let file = out.join(name);
    std::fs::write(&file, &bytes).map_err(|e| io(&file, e))?;
    Ok(Report {
        file: file.display().to_string(),
        bytes: bytes.len(),
        original_bytes,
        min_cosine,
    })
}

/// The least cosine over [`GUARD_SENTENCES`] between two models' mean-pooled embeddings.
pub fn min_cosine(a: ModelFiles, b: ModelFiles, device: &Device) -> Result<f32> {
    let texts: Vec<String> = GUARD_SENTENCES.iter().map(|s| s.to_string()).collect();
    let embed = |files: ModelFiles| -> Result<Vec<Vec<f32>>> {
        let embedder = Embedder::load(files, device.clone())?;
        pollster::block_on(embedder.embed(&texts, Pooling::Mean, true))
    };
    let (a, b) = (embed(a)?, embed(b)?);
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(x, y)| x * y).sum();
            let norm = |v: &[f32]| v.iter().map(|v| v * v).sum::<f32>().sqrt();
            dot / (norm(x) * norm(y))
        })
        .fold(f32::INFINITY, f32::min))
}
