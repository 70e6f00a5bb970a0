//! BERT's objective on one batch: the masked positions of the corrupted passages, the head's logits
//! there only, and the mean cross-entropy against the original tokens.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::Batch;
use crate::model::heads::BertForMaskedLM;
use crate::train::masking::MaskedSequence;

/// One step's masked positions as tensors: rows of the flattened `[batch * seq]` hidden states, and the
/// original token ids there.
pub struct Targets {
    pub positions: Tensor<1, Int>,
    pub labels: Tensor<1, Int>,
}

/// The corrupted batch and what must be predicted in it.
pub fn prepare(masked: &[MaskedSequence], pad_id: u32, device: &Device) -> (Batch, Targets) {
    let inputs: Vec<Vec<u32>> = masked.iter().map(|m| m.input_ids.clone()).collect();
    let batch = Batch::from_ids(&inputs, pad_id, device);
    let seq = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let (mut positions, mut labels) = (Vec::new(), Vec::new());
    for (row, m) in masked.iter().enumerate() {
        for (t, label) in m.labels.iter().enumerate() {
            if let Some(label) = label {
                positions.push((row * seq + t) as i64);
                labels.push(*label as i64);
            }
        }
    }
    let n = labels.len();
    let targets = Targets {
        positions: Tensor::from_data(TensorData::new(positions, [n]), device),
        labels: Tensor::from_data(TensorData::new(labels, [n]), device),
    };
    (batch, targets)
}

/// Logits `[n, vocab]` at the masked positions. Only those rows go through the head: the vocabulary
/// projection is most of a small model's FLOPs.
pub fn masked_logits(model: &BertForMaskedLM, batch: &Batch, targets: &Targets) -> Tensor<2> {
    let hidden = model.bert.forward(batch);
    let [b, s, h] = hidden.dims();
    model.head(
        hidden
            .reshape([b * s, h])
            .select(0, targets.positions.clone()),
    )
}

/// Mean cross-entropy over the masked positions, and their logits.
pub fn mlm_loss(
    model: &BertForMaskedLM,
    batch: &Batch,
    targets: &Targets,
) -> (Tensor<1>, Tensor<2>) {
    let logits = masked_logits(model, batch, targets);
    let n = targets.labels.dims()[0];
    let picked = log_softmax(logits.clone(), 1).gather(1, targets.labels.clone().reshape([n, 1]));
    (picked.mean().neg(), logits)
}
