//! A masked-LM model's tensors written out under Hugging Face's names.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;
use safetensors::tensor::Dtype;

use super::{Tensors, bert, mlm_head};
use crate::error::{Error, Result};
use crate::io::layout::Layout;
use crate::model::config::BertConfig;
use crate::model::heads::BertForMaskedLM;

/// Which tensors [`save_bert_for_masked_lm`] writes, and in what precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub dtype: Dtype,
    /// `false` writes a delta against the base encoder: everything but the (frozen) word embeddings.
    pub word_embeddings: bool,
}

/// Writes a `BertForMaskedLM` under Hugging Face's names (`bert.…`, `cls.predictions.…`): the inverse
/// of [`load_bert_for_masked_lm`], by the same walk. Linear weights go back to PyTorch's `[out, in]`.
pub fn save_bert_for_masked_lm(
    model: &BertForMaskedLM,
    config: &BertConfig,
    options: SaveOptions,
) -> Result<Vec<u8>> {
    let mut saver = Saver {
        tensors: Vec::new(),
        options,
    };
    bert(
        &mut saver,
        config,
        Layout::of(config.architecture).encoder,
        Some(&model.bert),
    )?;
    mlm_head(&mut saver, config, Some(&model.cls))?;
    let views: Vec<(String, safetensors::tensor::TensorView)> = saver
        .tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(options.dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Weights(e.to_string()))?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Weights(e.to_string()))
}

/// Collects `(name, shape, little-endian bytes)` of the parts it is handed, and hands them back.
struct Saver {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    options: SaveOptions,
}

impl Saver {
    /// Writes the model's own tensor and hands it back.
    fn keep<const D: usize>(
        &mut self,
        name: &str,
        have: Option<&Param<Tensor<D>>>,
    ) -> Result<Param<Tensor<D>>> {
        let have = part(have)?;
        self.write(name.to_string(), have.val());
        Ok(have.clone())
    }

    fn write<const D: usize>(&mut self, name: String, tensor: Tensor<D>) {
        if !self.options.word_embeddings && name.ends_with("embeddings.word_embeddings.weight") {
            return;
        }
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let bytes = match self.options.dtype {
            Dtype::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.tensors.push((name, shape, bytes));
    }
}

/// Saving walks the model it writes: every part is there.
fn part<T>(have: Option<T>) -> Result<T> {
    have.ok_or_else(|| Error::Weights("saving needs the model's own tensors".into()))
}

impl Tensors for Saver {
    fn tensor1(
        &mut self,
        name: &str,
        _: usize,
        have: Option<&Param<Tensor<1>>>,
    ) -> Result<Param<Tensor<1>>> {
        self.keep(name, have)
    }

    fn tensor2(
        &mut self,
        name: &str,
        _: [usize; 2],
        have: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        self.keep(name, have)
    }

    fn optional2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        have: Option<Option<&Param<Tensor<2>>>>,
    ) -> Result<Option<Param<Tensor<2>>>> {
        part(have)?
            .map(|t| self.tensor2(name, shape, Some(t)))
            .transpose()
    }

    fn which<'n>(&self, names: &[&'n str]) -> &'n str {
        names[names.len() - 1]
    }

    fn linears(
        &mut self,
        prefixes: &[String],
        _: usize,
        d_out: usize,
        _: bool,
        have: Option<&Linear>,
    ) -> Result<Linear> {
        let linear = part(have)?;
        for (n, prefix) in prefixes.iter().enumerate() {
            let start = n * d_out;
            let weight = linear.weight.val().narrow(1, start, d_out);
            self.write(format!("{prefix}.weight"), weight.transpose());
            if let Some(bias) = &linear.bias {
                self.write(format!("{prefix}.bias"), bias.val().narrow(0, start, d_out));
            }
        }
        Ok(linear.clone())
    }

    fn layer_norm(
        &mut self,
        prefix: &str,
        _: usize,
        _: f64,
        _: bool,
        have: Option<&LayerNorm>,
    ) -> Result<LayerNorm> {
        let norm = part(have)?;
        self.write(format!("{prefix}.weight"), norm.gamma.val());
        if let Some(beta) = &norm.beta {
            self.write(format!("{prefix}.bias"), beta.val());
        }
        Ok(norm.clone())
    }
}
