//! A trained model written out: in Hugging Face layout at the end of a run, and in the form `models/`
//! ships.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use safetensors::Dtype;

use crate::error::Error;
use crate::io::source::ModelFiles;
use crate::io::weights::{self, SaveOptions};
use crate::model::config::BertConfig;
use crate::model::heads::BertForMaskedLM;

/// The trained model in Hugging Face layout: `model.safetensors` (f32, all tensors), a `config.json` that
/// names `BertForMaskedLM`, and the base's tokenizer files.
pub(super) fn export(model: &BertForMaskedLM, base: &Path, out: &Path) -> crate::Result<()> {
    let io = |e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", out.display()));
    let config = std::fs::read_to_string(base.join("config.json")).map_err(|e| io(&e))?;
    let bytes = weights::save_bert_for_masked_lm(
        &model.valid(),
        &BertConfig::from_hf_json(&config)?,
        SaveOptions {
            dtype: Dtype::F32,
            word_embeddings: true,
        },
    )?;
    std::fs::write(out.join("model.safetensors"), bytes).map_err(|e| io(&e))?;
    let mut config: serde_json::Value = serde_json::from_str(&config).map_err(|e| io(&e))?;
    config["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    config["tie_word_embeddings"] = serde_json::json!(true);
    std::fs::write(out.join("config.json"), format!("{config:#}\n")).map_err(|e| io(&e))?;
    for name in [
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        if base.join(name).exists() {
            std::fs::copy(base.join(name), out.join(name)).map_err(|e| io(&e))?;
        }
    }
    Ok(())
}

/// The shard `models/` ships: every tensor but the word embeddings (which the base encoder already has).
pub const DELTA_SHARD: &str = "model-00002-of-00002.safetensors";

/// Cut from the base encoder's checkpoint by `scripts/assemble-mlm.py`.
pub const BASE_SHARD: &str = "model-00001-of-00002.safetensors";

/// Writes the shipped form of a trained model. With the word embeddings frozen: [`DELTA_SHARD`] in f16, a
/// `model.safetensors.index.json` that finds the word embeddings in [`BASE_SHARD`], and `config.json`.
/// With them trained (`training.json` says so), the base's no longer fit: the whole model as
/// `model.q8.safetensors` (`webbert quantize`'s int8, its accuracy guard included) beside its other files.
/// Returns the bytes of weights written.
pub fn ship(model_dir: &Path, out: &Path) -> crate::Result<usize> {
    let io = |e: &dyn std::fmt::Display| Error::Io(format!("{}: {e}", out.display()));
    let training = model_dir.join("training.json");
    let trained_embeddings = match std::fs::read(&training) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| Error::Io(format!("{}: {e}", training.display())))?["config"]
            ["train_word_embeddings"]
            .as_bool()
            .unwrap_or(false),
        Err(_) => false,
    };
    if trained_embeddings {
        let report = crate::io::quantize::quantize(
            model_dir,
            out,
            crate::io::source::WeightsDtype::Q8,
            &Device::flex(),
        )?;
        return Ok(report.bytes);
    }
    let files = ModelFiles::from_dir(model_dir)?;
    let model =
        weights::load_bert_for_masked_lm(&files.checkpoint, &files.config, &Device::flex())?;
    let delta = weights::save_bert_for_masked_lm(
        &model,
        &files.config,
        SaveOptions {
            dtype: Dtype::F16,
            word_embeddings: false,
        },
    )?;
    let names = safetensors::SafeTensors::deserialize(&delta)
        .map_err(|e| io(&e))?
        .names()
        .into_iter()
        .map(|name| (name.to_string(), DELTA_SHARD))
        .chain([(
            "bert.embeddings.word_embeddings.weight".to_string(),
            BASE_SHARD,
        )])
        .collect::<std::collections::BTreeMap<_, _>>();
    let word_embeddings = files.config.vocab_size * files.config.hidden_size * 4;
    let index = serde_json::json!({
        "metadata": {"total_size": delta.len() + word_embeddings},
        "weight_map": names,
    });
    std::fs::create_dir_all(out).map_err(|e| io(&e))?;
    std::fs::write(out.join(DELTA_SHARD), &delta).map_err(|e| io(&e))?;
    std::fs::write(
        out.join("model.safetensors.index.json"),
        format!("{index:#}\n"),
    )
    .map_err(|e| io(&e))?;
    std::fs::copy(model_dir.join("config.json"), out.join("config.json")).map_err(|e| io(&e))?;
    Ok(delta.len())
}
