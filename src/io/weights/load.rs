//! A model's modules built from a checkpoint's tensors.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::{Tensors, bert, classification_head, mlm_head};
use crate::error::Result;
use crate::io::checkpoint::{Checkpoint, Q8_BLOCK};
use crate::io::layout::Layout;
use crate::model::BertModel;
use crate::model::config::BertConfig;
use crate::model::heads::{
    BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
    BertForTokenClassification, TokenHead,
};
use crate::ops::linear::{q8_scheme, q8_table_scheme};

/// Builds modules from a checkpoint's tensors, each checked by name, shape and dtype.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    device: &'a Device,
}

impl Loader<'_> {
    fn param<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    /// The same kept f16, for kernels that read f16 as stored.
    fn f16_param(&self, values: Vec<half::f16>, shape: [usize; 2]) -> Param<Tensor<2>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            (self.device, DType::F16),
        ))
    }

    /// Whether a q8 checkpoint's matrices of `width` columns as held (`[in, out]` Linears, `[vocab,
    /// width]` tables) stay int8, and if so packed in words (`Some(true)`): on the GPU, whose kernels
    /// unpack them (four columns to a word, so `width` a multiple of 4), and on the browser's CPU path
    /// (`Some(false)`), whose one thread multiplies them as they are. Otherwise they are widened to f32
    /// here: natively on the CPU, where flex's f32 gemm on every core is faster, and for training.
    fn int8(&self, width: usize) -> Option<bool> {
        if self.device.is_autodiff() {
            None
        } else if *self.device == Device::flex() {
            cfg!(target_arch = "wasm32").then_some(false)
        } else {
            width.is_multiple_of(4).then_some(true)
        }
    }

    /// [`Tensors::linears`] from int8 parts, kept int8 in burn's block quantisation: `None` if a part is
    /// stored as floats. Blocks stay along `in` as the parts are transposed, scales with them.
    fn q8_linears(
        &self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Option<Linear>> {
        let width = prefixes.len() * d_out;
        let Some(scheme) = self.int8(width).map(q8_scheme) else {
            return Ok(None);
        };
        let read = |name: &str| self.checkpoint.read_q8(name, [d_out, d_in]);
        let Some(parts) = stored_parts(prefixes, read)? else {
            return Ok(None);
        };
        let (weights, scales): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let biases = self.biases(prefixes, d_out, bias)?;
        let (weights, scales) = (
            side_by_side(&weights, d_in),
            side_by_side(&scales, d_in / Q8_BLOCK),
        );
        let data = TensorData::quantized(weights, [d_in, width], scheme, &scales, None);
        Ok(Some(Linear {
            weight: Param::from_tensor(Tensor::from_data(data, self.device)),
            bias: biases.map(|b| self.param(b, [width])),
        }))
    }

    /// [`Tensors::linears`] from f16 parts, kept f16 on the GPU, whose kernels unpack them two columns
    /// to a word (so the width even): `None` if a part is stored otherwise, or elsewhere (the CPU, and
    /// training), where they are widened.
    fn f16_linears(
        &self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Option<Linear>> {
        let width = prefixes.len() * d_out;
        if !self.keeps_f16() || !width.is_multiple_of(2) {
            return Ok(None);
        }
        let read = |name: &str| self.checkpoint.read_f16(name, [d_out, d_in]);
        let Some(weights) = stored_parts(prefixes, read)? else {
            return Ok(None);
        };
        let biases = self.biases(prefixes, d_out, bias)?;
        Ok(Some(Linear {
            weight: self.f16_param(side_by_side(&weights, d_in), [d_in, width]),
            bias: biases.map(|b| self.param(b, [width])),
        }))
    }

    /// Whether this device's kernels read f16 weights as stored: a GPU's, not for training.
    fn keeps_f16(&self) -> bool {
        !self.device.is_autodiff() && *self.device != Device::flex()
    }

    /// The parts' biases end to end, if the Linears have them.
    fn biases(&self, prefixes: &[String], d_out: usize, bias: bool) -> Result<Option<Vec<f32>>> {
        bias.then(|| {
            prefixes
                .iter()
                .map(|prefix| self.checkpoint.read(&format!("{prefix}.bias"), &[d_out]))
                .collect::<Result<Vec<_>>>()
                .map(|parts| parts.concat())
        })
        .transpose()
    }

    /// The encoder's prefix (`"bert."`) if the checkpoint is a task model's, `""` if a bare encoder's.
    fn encoder_prefix(&self, config: &BertConfig) -> &'static str {
        let names = Layout::of(config.architecture);
        let word = format!("{}{}.weight", names.encoder, names.word_embeddings);
        match self.checkpoint.contains(&word) {
            true => names.encoder,
            false => "",
        }
    }
}

impl Tensors for Loader<'_> {
    fn tensor1(
        &mut self,
        name: &str,
        len: usize,
        _: Option<&Param<Tensor<1>>>,
    ) -> Result<Param<Tensor<1>>> {
        Ok(self.param(self.checkpoint.read(name, &[len])?, [len]))
    }

    fn tensor2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        _: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        Ok(self.param(self.checkpoint.read(name, &shape)?, shape))
    }

    fn table(
        &mut self,
        name: &str,
        shape: [usize; 2],
        _: Option<&Param<Tensor<2>>>,
    ) -> Result<Param<Tensor<2>>> {
        // The lookup and the tied decoder read rows of whole words.
        if self.keeps_f16()
            && shape[1].is_multiple_of(2)
            && let Some(values) = self.checkpoint.read_f16(name, shape)?
        {
            return Ok(self.f16_param(values, shape));
        }
        if let Some(scheme) = self.int8(shape[1]).map(q8_table_scheme)
            && let Some((values, scales)) = self.checkpoint.read_q8(name, shape)?
        {
            let data = TensorData::quantized(values, shape, scheme, &scales, None);
            return Ok(Param::from_tensor(Tensor::from_data(data, self.device)));
        }
        self.tensor2(name, shape, None)
    }

    fn optional2(
        &mut self,
        name: &str,
        shape: [usize; 2],
        _: Option<Option<&Param<Tensor<2>>>>,
    ) -> Result<Option<Param<Tensor<2>>>> {
        match self.checkpoint.contains(name) {
            true => self.tensor2(name, shape, None).map(Some),
            false => Ok(None),
        }
    }

    fn which<'n>(&self, names: &[&'n str]) -> &'n str {
        let last = names[names.len() - 1];
        names
            .iter()
            .copied()
            .find(|n| self.checkpoint.contains(n))
            .unwrap_or(last)
    }

    fn linears(
        &mut self,
        prefixes: &[String],
        d_in: usize,
        d_out: usize,
        bias: bool,
        _: Option<&Linear>,
    ) -> Result<Linear> {
        if let Some(linear) = self.q8_linears(prefixes, d_in, d_out, bias)? {
            return Ok(linear);
        }
        if let Some(linear) = self.f16_linears(prefixes, d_in, d_out, bias)? {
            return Ok(linear);
        }
        // Every part read (and its shape checked against the file) before the sizes from config.json
        // allocate anything.
        let weights = prefixes
            .iter()
            .map(|prefix| {
                self.checkpoint
                    .read(&format!("{prefix}.weight"), &[d_out, d_in])
            })
            .collect::<Result<Vec<_>>>()?;
        let biases = self.biases(prefixes, d_out, bias)?;
        let width = prefixes.len() * d_out;
        Ok(Linear {
            weight: self.param(side_by_side(&weights, d_in), [d_in, width]),
            bias: biases.map(|b| self.param(b, [width])),
        })
    }

    fn layer_norm(
        &mut self,
        prefix: &str,
        width: usize,
        epsilon: f64,
        bias: bool,
        _: Option<&LayerNorm>,
    ) -> Result<LayerNorm> {
        // Read first: `init` allocates `width` from config.json, checked against the file here.
        let gamma = self.tensor1(&format!("{prefix}.weight"), width, None)?;
        let beta = match bias {
            true => Some(self.tensor1(&format!("{prefix}.bias"), width, None)?),
            false => None,
        };
        // `init` only sets epsilon here; its ones/zeros are replaced at once.
        let mut norm = LayerNormConfig::new(width)
            .with_epsilon(epsilon)
            .init(self.device);
        norm.gamma = gamma;
        norm.beta = beta;
        Ok(norm)
    }
}

/// Each part's `{prefix}.weight` as `read` finds it stored; `None` if a part is stored otherwise.
fn stored_parts<T>(
    prefixes: &[String],
    read: impl Fn(&str) -> Result<Option<T>>,
) -> Result<Option<Vec<T>>> {
    let mut parts = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        match read(&format!("{prefix}.weight"))? {
            Some(part) => parts.push(part),
            None => return Ok(None),
        }
    }
    Ok(Some(parts))
}

/// PyTorch Linears' `[out, columns]` matrices (or their block scales) as one burn matrix `[columns, n × out]`,
/// the parts' outputs side by side.
fn side_by_side<T: Copy + Default>(parts: &[Vec<T>], columns: usize) -> Vec<T> {
    let width: usize = parts.iter().map(|p| p.len() / columns.max(1)).sum();
    let mut out = vec![T::default(); columns * width];
    let mut first = 0;
    for part in parts {
        for (o, row) in part.chunks_exact(columns.max(1)).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                out[i * width + first + o] = x;
            }
        }
        first += part.len() / columns.max(1);
    }
    out
}

/// The encoder from a bare encoder's checkpoint or any task model's of its family (heads ignored).
pub fn load_bert(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertModel> {
    load(checkpoint, config, device, |loader, prefix| {
        bert(loader, config, prefix, None)
    })
}

/// What `build` makes of the checkpoint's tensors on `device`, in the weights' pool ([`persistent`]);
/// `build` is given the loader and the encoder's prefix in the checkpoint.
fn load<T: Send>(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
    build: impl FnOnce(&mut Loader, &'static str) -> Result<T> + Send,
) -> Result<T> {
    persistent(device, || {
        let mut loader = Loader { checkpoint, device };
        let prefix = loader.encoder_prefix(config);
        build(&mut loader, prefix)
    })
}

/// What `load` uploads goes to cubecl's pool for weights (exact sizes, never moved or reclaimed), not to
/// the pages activations are carved from. There, the pages' size would follow the largest weight (~56 MB
/// for MiniLM's vocabulary table), and each recorded call keeps the pages it used (pipelines/replay.rs).
fn persistent<T: Send>(device: &Device, load: impl FnOnce() -> T + Send) -> T {
    device.memory_persistent_allocations(load, |load| load())
}

/// A `*ForMaskedLM` checkpoint; the decoder is tied to the word embeddings unless the checkpoint
/// carries `cls.predictions.decoder.weight`.
pub fn load_bert_for_masked_lm(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForMaskedLM> {
    load(checkpoint, config, device, |loader, prefix| {
        Ok(BertForMaskedLM {
            bert: bert(loader, config, prefix, None)?,
            cls: mlm_head(loader, config, None)?,
        })
    })
}

/// A `*ForSequenceClassification` checkpoint: the encoder and the classifier on its first token.
pub fn load_bert_for_sequence_classification(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForSequenceClassification> {
    load(checkpoint, config, device, |loader, prefix| {
        Ok(BertForSequenceClassification {
            bert: bert(loader, config, prefix, None)?,
            classifier: classification_head(loader, config, prefix, None)?,
        })
    })
}

/// A `*ForTokenClassification` checkpoint: the encoder and `classifier` onto `id2label`'s labels.
pub fn load_bert_for_token_classification(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForTokenClassification> {
    let name = Layout::of(config.architecture).token_classifier;
    let labels = config.labels.len();
    let (bert, head, classifier) = per_token(checkpoint, config, device, name, labels)?;
    Ok(BertForTokenClassification {
        bert,
        head,
        classifier,
        labels: config.labels.clone(),
    })
}

/// A `*ForQuestionAnswering` checkpoint: the encoder and `qa_outputs` (start and end logits).
pub fn load_bert_for_question_answering(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
) -> Result<BertForQuestionAnswering> {
    let name = Layout::of(config.architecture).qa_outputs;
    let (bert, head, qa_outputs) = per_token(checkpoint, config, device, name, 2)?;
    Ok(BertForQuestionAnswering {
        bert,
        head,
        qa_outputs,
    })
}

/// What the per-token tasks share: the encoder, ModernBERT's `head`, and the Linear `name` onto `outputs`
/// values at every token.
fn per_token(
    checkpoint: &Checkpoint,
    config: &BertConfig,
    device: &Device,
    name: &str,
    outputs: usize,
) -> Result<(BertModel, Option<TokenHead>, Linear)> {
    load(checkpoint, config, device, |loader, prefix| {
        Ok((
            bert(loader, config, prefix, None)?,
            token_head(loader, config)?,
            loader.linear(name, config.hidden_size, outputs, true, None)?,
        ))
    })
}

/// ModernBERT's `head` under its token classifier and span head; `None` for the families without one.
fn token_head(loader: &mut Loader, c: &BertConfig) -> Result<Option<TokenHead>> {
    let Some(names) = &Layout::of(c.architecture).token_head else {
        return Ok(None);
    };
    let h = c.hidden_size;
    Ok(Some(TokenHead {
        dense: loader.linear(names.dense, h, h, c.classifier_bias, None)?,
        layer_norm: loader.layer_norm(names.norm, h, c.layer_norm_eps, c.norm_bias, None)?,
        layer_norm_eps: c.layer_norm_eps,
        act: c.head_act,
    }))
}
