//! Sentence embeddings: texts grouped by length, pooled and normalised, back in input order.

use burn::tensor::Device;

use super::{BATCH_TEXTS, Pipeline, batches, non_empty, read_one_ahead};
use crate::error::Result;
use crate::io::source::ModelFiles;
use crate::io::weights::load_bert;
use crate::model::heads::{Pooling, pool};
use crate::model::{Batch, BertModel};
use crate::tokenizer::Encoding;

pub type Embedder = Pipeline<BertModel>;

impl Embedder {
    /// The encoder of any supported checkpoint (heads ignored).
    pub fn load(files: ModelFiles, device: Device) -> Result<Self> {
        Self::load_from(&files, device)
    }

    /// As [`load`](Self::load), leaving the files to load another copy (on another device). Texts are
    /// cut at sentence-transformers' `max_seq_length` where the files give one.
    pub fn load_from(files: &ModelFiles, device: Device) -> Result<Self> {
        let model = load_bert(&files.checkpoint, &files.config, &device)?;
        let tokenizer = match files.sentence.max_seq_length {
            Some(max_len) => files.tokenizer.clone().truncated_at(max_len)?,
            None => files.tokenizer.clone(),
        };
        Ok(Self::with(files, tokenizer, model, device))
    }

    /// One vector per text, `[CLS]` or mean-pooled (padding excluded), optionally L2-normalised.
    pub async fn embed(
        &self,
        texts: &[String],
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        self.embed_with(texts, pooling, normalize, async |_, _| Ok(()))
            .await
    }

    /// As [`embed`](Self::embed), calling `progress(done, total)` after each forward pass's texts; an
    /// error from it (e.g. [`Error::Aborted`](crate::Error::Aborted)) ends the call there.
    ///
    /// Texts go through in order of length, so that a batch pads its texts to little more than their
    /// own length, in batches under [`Shape::texts_per_batch`]; the vectors come back in input order.
    /// Each group of texts is tokenized while the GPU runs the group before.
    pub async fn embed_with(
        &self,
        texts: &[String],
        pooling: Pooling,
        normalize: bool,
        mut progress: impl AsyncFnMut(usize, usize) -> Result<()>,
    ) -> Result<Vec<Vec<f32>>> {
        // Characters stand in for tokens, which are only known once a group is tokenized.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let encode_group = |group: &[usize]| -> Result<Vec<(usize, Encoding)>> {
            let group_texts = group
                .iter()
                .map(|&i| non_empty(&texts[i]))
                .collect::<Result<Vec<_>>>()?;
            let encodings = self.tokenizer.encode_all(&group_texts)?;
            let mut encoded: Vec<_> = group.iter().copied().zip(encodings).collect();
            encoded.sort_by_key(|(_, e)| e.ids.len());
            Ok(encoded)
        };
        // Lazily: a group is tokenized when its first pass is due.
        let passes = order
            .chunks(BATCH_TEXTS)
            .map(encode_group)
            .flat_map(|group| match group {
                Ok(encoded) => batches(encoded, &self.shape).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            });
        let launches = passes.map(|pass| {
            let (indices, encodings): (Vec<usize>, Vec<Encoding>) = pass?.into_iter().unzip();
            let data = self.batch_data(&encodings);
            let pooled = self.replays.run(
                "embed",
                [pooling as usize, normalize as usize],
                &data,
                &self.device,
                |batch: &Batch| {
                    let hidden = self.model.forward(batch);
                    pool(hidden, batch.attention_mask.clone(), pooling, normalize)
                },
            );
            Ok((indices, pooled.start_read()))
        });
        let mut rows = vec![Vec::new(); texts.len()];
        let mut done = 0;
        read_one_ahead(launches, async |indices: Vec<usize>, values: Vec<f32>| {
            let width = values.len() / indices.len();
            done += indices.len();
            for (i, row) in indices.into_iter().zip(values.chunks_exact(width)) {
                rows[i] = row.to_vec();
            }
            progress(done, texts.len()).await
        })
        .await?;
        Ok(rows)
    }
}
