//! The BERT encoder: embeddings, then N encoder layers (then ModernBERT's final norm). Input ids in,
//! contextual hidden states out.

pub mod attention;
pub mod config;
pub mod disentangled;
pub mod embeddings;
pub mod heads;
pub mod layer;
pub mod length_cache;
pub mod position_bias;
pub mod rotary;

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::ops::add_norm::norm;
use crate::ops::linear::linear;
use crate::tokenizer::Encoding;
use attention::AttentionInputs;
use disentangled::RelativeEmbeddings;
use embeddings::BertEmbeddings;
use layer::BertLayer;
use position_bias::RelativePositionBias;
use rotary::RotaryEmbedding;

#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    /// ALBERT's and ELECTRA's projection of narrow embeddings up to the hidden size.
    pub embeddings_project: Option<Linear>,
    /// In order; ALBERT's share their weights (clones of one layer's tensors, not copies).
    pub layers: Vec<BertLayer>,
    /// MPNet's, shared by every layer.
    pub position_bias: Option<RelativePositionBias>,
    /// DeBERTa's, shared by every layer.
    pub relative_embeddings: Option<RelativeEmbeddings>,
    /// ModernBERT's positions.
    #[module(skip)]
    pub rotary: Option<RotaryEmbedding>,
    /// ModernBERT's local layers' reach on either side.
    #[module(skip)]
    pub sliding_window: Option<usize>,
    /// ModernBERT's `final_norm`, after the last (pre-norm) layer.
    pub final_norm: Option<LayerNorm>,
    pub layer_norm_eps: f64,
}

/// Encodings padded to one length, as tensors on the device.
pub struct Batch {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding: `[batch, seq]`.
    pub attention_mask: Tensor<2>,
}

/// A [`Batch`]'s values on the host, before they are uploaded (or written over a batch of the same shape).
pub struct BatchData {
    pub input_ids: TensorData,
    pub token_type_ids: TensorData,
    pub attention_mask: TensorData,
}

impl Batch {
    /// Right-pads every encoding with `pad_id` to the longest one.
    pub fn new(encodings: &[Encoding], pad_id: u32, device: &Device) -> Self {
        Self::upload(&BatchData::new(encodings, pad_id), device)
    }

    /// Single-segment id sequences (segment 0 throughout), right-padded with `pad_id`.
    pub fn from_ids(sequences: &[Vec<u32>], pad_id: u32, device: &Device) -> Self {
        Self::upload(&BatchData::from_ids(sequences, pad_id), device)
    }

    /// `data` on `device`.
    pub fn upload(data: &BatchData, device: &Device) -> Self {
        Self {
            input_ids: Tensor::from_data(data.input_ids.clone(), device),
            token_type_ids: Tensor::from_data(data.token_type_ids.clone(), device),
            attention_mask: Tensor::from_data(data.attention_mask.clone(), device),
        }
    }
}

impl BatchData {
    /// Right-pads every encoding with `pad_id` to the longest one.
    pub fn new(encodings: &[Encoding], pad_id: u32) -> Self {
        Self::padded(encodings, pad_id, 0)
    }

    /// Right-pads every encoding with `pad_id` to `len` tokens, or to the longest one if that is longer.
    pub fn padded(encodings: &[Encoding], pad_id: u32, len: usize) -> Self {
        let rows: Vec<(&[u32], &[u32])> = encodings
            .iter()
            .map(|e| (e.ids.as_slice(), e.token_type_ids.as_slice()))
            .collect();
        Self::from_rows(&rows, pad_id, len)
    }

    /// Single-segment id sequences (segment 0 throughout), right-padded with `pad_id`.
    pub fn from_ids(sequences: &[Vec<u32>], pad_id: u32) -> Self {
        let zeros = vec![0u32; sequences.iter().map(Vec::len).max().unwrap_or(0)];
        let rows: Vec<(&[u32], &[u32])> = sequences
            .iter()
            .map(|ids| (ids.as_slice(), &zeros[..ids.len()]))
            .collect();
        Self::from_rows(&rows, pad_id, 0)
    }

    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        let shape = self.input_ids.shape();
        [shape[0], shape[1]]
    }

    /// `(input ids, token type ids)` per sequence, padded to `len` or the longest.
    fn from_rows(rows: &[(&[u32], &[u32])], pad_id: u32, len: usize) -> Self {
        let seq = rows.iter().map(|(ids, _)| ids.len()).fold(len, usize::max);
        let batch = rows.len();
        let (mut ids, mut types, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (row_ids, row_types) in rows {
            let pad = seq - row_ids.len();
            ids.extend(
                row_ids
                    .iter()
                    .map(|&i| i as i64)
                    .chain(std::iter::repeat_n(pad_id as i64, pad)),
            );
            types.extend(
                row_types
                    .iter()
                    .map(|&i| i as i64)
                    .chain(std::iter::repeat_n(0, pad)),
            );
            mask.extend(
                std::iter::repeat_n(1.0f32, row_ids.len()).chain(std::iter::repeat_n(0.0, pad)),
            );
        }
        Self {
            input_ids: TensorData::new(ids, [batch, seq]),
            token_type_ids: TensorData::new(types, [batch, seq]),
            attention_mask: TensorData::new(mask, [batch, seq]),
        }
    }
}

impl AsRef<BertModel> for BertModel {
    fn as_ref(&self) -> &BertModel {
        self
    }
}

impl BertModel {
    /// Last hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, batch: &Batch) -> Tensor<3> {
        let inputs = self.attention_inputs(batch);
        let mut hidden = self.embed(batch);
        for layer in &self.layers {
            hidden = layer.forward(hidden, &inputs);
        }
        self.finish(hidden)
    }

    /// Last hidden states and every layer's attention probabilities `[batch, heads, seq, seq]`.
    pub fn forward_with_attentions(&self, batch: &Batch) -> (Tensor<3>, Vec<Tensor<4>>) {
        let inputs = self.attention_inputs(batch);
        let mut hidden = self.embed(batch);
        let mut attentions = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (next, probs) = layer.forward_with_probs(hidden, &inputs);
            attentions.push(probs);
            hidden = next;
        }
        (self.finish(hidden), attentions)
    }

    /// transformers' `hidden_states`: the embeddings' output, every layer's output but the last, and the
    /// last hidden state (the last layer's output, after ModernBERT's final norm).
    pub fn hidden_states(&self, batch: &Batch) -> Vec<Tensor<3>> {
        let inputs = self.attention_inputs(batch);
        let mut states = vec![self.embed(batch)];
        for layer in &self.layers {
            let next = layer.forward(states[states.len() - 1].clone(), &inputs);
            states.push(next);
        }
        let last = states.pop().map(|hidden| self.finish(hidden));
        states.extend(last);
        states
    }

    /// What every layer's attention reads besides the hidden states: the padding, MPNet's position bias,
    /// DeBERTa's relative positions, ModernBERT's rotations and window.
    fn attention_inputs(&self, batch: &Batch) -> AttentionInputs {
        let seq = batch.input_ids.dims()[1];
        let device = batch.input_ids.device();
        AttentionInputs {
            attention_mask: batch.attention_mask.clone(),
            position_bias: self.position_bias.as_ref().map(|b| b.forward(seq, &device)),
            relative: self
                .relative_embeddings
                .as_ref()
                .map(|r| r.forward(seq, &device)),
            rotations: self
                .rotary
                .as_ref()
                .map(|rotary| rotary.rotations(seq, &device)),
            sliding_window: self.sliding_window,
        }
    }

    fn embed(&self, batch: &Batch) -> Tensor<3> {
        let embedded = self
            .embeddings
            .forward(batch.input_ids.clone(), batch.token_type_ids.clone());
        match &self.embeddings_project {
            Some(project) => linear(project, embedded, false),
            None => embedded,
        }
    }

    /// After the last layer: ModernBERT's final norm, if any.
    fn finish(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.final_norm {
            Some(final_norm) => norm(final_norm, self.layer_norm_eps, hidden),
            None => hidden,
        }
    }
}
