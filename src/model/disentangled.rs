//! DeBERTa's disentangled attention (He et al., 2021): each score adds to the content term QKᵀ a
//! content-to-position term (the query against the embedding of the key's position relative to it, "c2p")
//! and a position-to-content term (the key against the query's, "p2c"), all divided by √(d × terms). One
//! table of relative position embeddings serves every layer, each projecting it with its own query and key
//! weights; distances from half the buckets on share logarithmically wider buckets.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::config::RelativeAttention;
use crate::ops::add_norm::norm;
use crate::ops::disentangled::disentangled_scores;

#[derive(Module, Debug)]
pub struct RelativeEmbeddings {
    /// `encoder.rel_embeddings`: `[2 × span, hidden]`, row `span + δ` for the relative position δ.
    pub rel_embeddings: Embedding,
    /// `encoder.LayerNorm`, where `norm_rel_ebd` asks for it.
    pub layer_norm: Option<LayerNorm>,
    pub layer_norm_eps: f64,
    #[module(skip)]
    pub options: RelativeAttention,
}

/// transformers' `make_log_bucket_position`: the relative position `delta` itself up to half the buckets
/// away, beyond that `mid + ⌈ln(|δ| / mid) / ln((max − 1) / mid) · (mid − 1)⌉` with δ's sign. In f32, as
/// PyTorch computes it, so that a distance falls in the same bucket.
pub fn log_bucket(delta: i64, buckets: usize, max_position: usize) -> i64 {
    let mid = (buckets / 2) as i64;
    let distance = delta.abs();
    if distance <= mid {
        return delta;
    }
    let mid_f = mid as f32;
    let range = (((max_position - 1) as f64 / mid as f64) as f32).ln();
    let log = ((distance as f32 / mid_f).ln() / range * (mid - 1) as f32).ceil() + mid_f;
    log as i64 * delta.signum()
}

/// What every layer's disentangled attention reads, made once per forward pass.
#[derive(Debug, Clone)]
pub struct RelativePositions {
    /// The rows of the table the sequence reaches (normalised), `[1, rows, hidden]`: a batch of one for the
    /// layers' projections.
    pub embeddings: Tensor<3>,
    /// c2p: per distance `query − key` (at that plus `seq − 1`), the row of `embeddings` for the key's
    /// position relative to the query, `[2 × seq − 1]`.
    key_rows: Option<Tensor<1, Int>>,
    /// p2c: per distance `key − query`, the row for the query's position relative to the key.
    query_rows: Option<Tensor<1, Int>>,
    /// The terms per score: scores are divided by √(head width × this).
    pub scale_factor: usize,
}

impl RelativeEmbeddings {
    /// The rows and indices for sequences of `seq` tokens. Only the rows the sequence reaches are kept (a
    /// short text reads few of v3's 512), so that the layers project and multiply no more than those.
    pub fn forward(&self, seq: usize, device: &Device) -> RelativePositions {
        let o = self.options;
        let span = o.span() as i64;
        let bucket = |delta: i64| match o.position_buckets {
            0 => delta,
            buckets => log_bucket(delta, buckets, o.max_relative_positions),
        };
        let row = |delta: i64| (delta + span).clamp(0, 2 * span - 1);
        // As transformers: c2p at (query, key) reads row(bucket(query − key)), p2c at (key, query) reads
        // row(−bucket(key − query)).
        let distances = 1 - seq as i64..seq as i64;
        let c2p = o.c2p.then(|| {
            distances
                .clone()
                .map(|delta| row(bucket(delta)))
                .collect::<Vec<_>>()
        });
        let p2c = o.p2c.then(|| {
            distances
                .map(|delta| row(-bucket(delta)))
                .collect::<Vec<_>>()
        });
        let used = c2p.iter().chain(&p2c).flatten();
        let first = used.clone().copied().min().unwrap_or(0);
        let rows = used.copied().max().map_or(1, |last| last - first + 1);
        let index = |rows: Vec<i64>| {
            let shifted = rows.into_iter().map(|r| r - first).collect();
            Tensor::from_data(TensorData::new(shifted, [2 * seq - 1]), device)
        };
        let table = self
            .rel_embeddings
            .weight
            .val()
            .narrow(0, first as usize, rows as usize)
            .unsqueeze::<3>();
        let embeddings = match &self.layer_norm {
            Some(layer_norm) => norm(layer_norm, self.layer_norm_eps, table),
            None => table,
        };
        RelativePositions {
            embeddings,
            key_rows: c2p.map(index),
            query_rows: p2c.map(index),
            scale_factor: o.scale_factor(),
        }
    }
}

impl RelativePositions {
    /// c2p + p2c, `[batch, heads, seq, seq]`, not yet scaled, of a layer whose fused projection is `qkv`
    /// `[batch, seq, 3 × hidden]` and whose query and key projections of [`embeddings`](Self::embeddings)
    /// are `positions` `[1, rows, 2 × hidden]`.
    pub fn scores(
        &self,
        qkv: Tensor<3>,
        positions: Tensor<3>,
        num_heads: usize,
    ) -> Option<Tensor<4>> {
        disentangled_scores(
            qkv,
            positions,
            self.key_rows.clone(),
            self.query_rows.clone(),
            num_heads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' buckets for microsoft/deberta-v3-base (256 buckets, 512 positions) and for the tiny
    /// fixture's 16 and 128, as `make_log_bucket_position` gives them on PyTorch (past the table's span
    /// too: the rows clamp them).
    #[test]
    fn log_buckets_as_transformers_lays_them_out() {
        let v3 = |d| log_bucket(d, 256, 512);
        assert_eq!(
            [v3(0), v3(-5), v3(127), v3(128), v3(-128)],
            [0, -5, 127, 128, -128]
        );
        assert_eq!(
            [v3(129), v3(200), v3(300), v3(511), v3(-511), v3(1000)],
            [129, 169, 207, 255, -255, 317]
        );
        let tiny = |d| log_bucket(d, 16, 128);
        assert_eq!([tiny(7), tiny(8), tiny(-8)], [7, 8, -8]);
        assert_eq!(
            [tiny(9), tiny(20), tiny(64), tiny(127), tiny(-99)],
            [9, 11, 14, 15, -15]
        );
    }
}
