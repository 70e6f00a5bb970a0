//! MPNet's relative position bias (T5's buckets): a learned bias per head and bucket of the distance from
//! query to key, added to every layer's attention scores.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::model::length_cache::LengthCache;
use crate::ops::distance_index;

/// Distances from this far on share the last bucket.
const MAX_DISTANCE: usize = 128;
/// The buckets transformers lays distances into: its default, whatever `relative_attention_num_buckets`
/// says (the table has that many rows).
const NUM_BUCKETS: usize = 32;

#[derive(Module, Debug)]
pub struct RelativePositionBias {
    /// `[buckets, heads]`.
    pub relative_attention_bias: Embedding,
    /// Each (query, key)'s row of the table, `[positions, positions]`, kept between calls (written every call,
    /// it was 1 MB at 512 tokens).
    #[module(skip)]
    pub rows: LengthCache<Tensor<2, Int>>,
}

/// The bucket of `key - query` (transformers' `relative_position_bucket`, bidirectional): half the buckets
/// for keys before the query, half after; within each half, exact distances up to a quarter of the
/// buckets, then logarithmically wider ones up to `MAX_DISTANCE`. In f32, as PyTorch computes it, so
/// that a distance falls in the same bucket.
pub fn bucket(relative_position: i64, num_buckets: usize) -> usize {
    let half = num_buckets / 2;
    let n = -relative_position;
    let side = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        return side + n;
    }
    let scale = (MAX_DISTANCE as f64 / max_exact as f64).ln() as f32;
    let log = (n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32;
    side + (max_exact + log as usize).min(half - 1)
}

/// `f(a − b)` for every (a, b) in `0..seq` × `0..seq`, row-major: relative positions depend on the
/// difference alone, so `f` (a logarithmic bucket) runs once per difference, not once per pair.
fn by_difference(seq: usize, f: impl Fn(i64) -> i64) -> Vec<i64> {
    let n = seq as i64;
    let values: Vec<i64> = (1 - n..n).map(f).collect();
    distance_index(seq).map(|i| values[i]).collect()
}

impl RelativePositionBias {
    /// The bias for sequences of `seq` tokens, `[1, heads, seq, seq]` (the same for every sequence of a
    /// batch).
    pub fn forward(&self, seq: usize, device: &Device) -> Tensor<4> {
        let [rows, heads] = self.relative_attention_bias.weight.dims();
        let grid = self.rows.at_least(seq, device, |positions| {
            // Over (query, key): the bucket of key − query.
            let buckets = by_difference(positions, |query_minus_key| {
                (bucket(-query_minus_key, NUM_BUCKETS) as i64).min(rows as i64 - 1)
            });
            Tensor::from_data(TensorData::new(buckets, [positions, positions]), device)
        });
        // A shorter sequence's grid is the top-left corner: the bucket depends on the distance alone.
        let grid = grid
            .narrow(0, 0, seq)
            .narrow(1, 0, seq)
            .reshape([seq * seq]);
        self.relative_attention_bias
            .weight
            .val()
            .select(0, grid)
            .reshape([seq, seq, heads])
            .permute([2, 0, 1])
            .reshape([1, heads, seq, seq])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T5's layout for 32 buckets: keys before the query in 0..16, after it in 16..32; distances 0-7
    /// exact, then 8 buckets up to 128 (16 → 10, 32 → 12, 64 → 14, 128 and past → 15).
    #[test]
    fn buckets_as_t5_lays_them_out() {
        let b = |d| bucket(d, 32);
        assert_eq!([b(0), b(-1), b(-7), b(-8)], [0, 1, 7, 8]);
        assert_eq!([b(1), b(7), b(8)], [17, 23, 24]);
        assert_eq!(
            [b(-16), b(-32), b(-64), b(-127), b(-128), b(-1000)],
            [10, 12, 14, 15, 15, 15]
        );
        assert_eq!([b(16), b(1000)], [26, 31]);
    }

    /// Each length's bias, whether cut from a longer length's cached rows or refilling them, is the table's
    /// row for the bucket of key − query, per head.
    #[test]
    fn cached_bias_is_the_sequences_own() {
        let device = Device::flex();
        let (rows, heads) = (20, 3);
        let table: Vec<f32> = (0..rows * heads).map(|i| i as f32).collect();
        let weight = Tensor::<2>::from_data(TensorData::new(table.clone(), [rows, heads]), &device);
        let bias = RelativePositionBias {
            relative_attention_bias: Embedding {
                weight: burn::module::Param::from_tensor(weight),
            },
            rows: LengthCache::default(),
        };
        for seq in [7, 5, 1, 40, 9, 33] {
            let got = bias.forward(seq, &device);
            assert_eq!(got.dims(), [1, heads, seq, seq]);
            let got = got.into_data().try_into_vec::<f32>().unwrap();
            for (h, q, k) in (0..heads)
                .flat_map(|h| (0..seq).flat_map(move |q| (0..seq).map(move |k| (h, q, k))))
            {
                let row = bucket(k as i64 - q as i64, NUM_BUCKETS).min(rows - 1);
                assert_eq!(
                    got[(h * seq + q) * seq + k],
                    table[row * heads + h],
                    "{seq} {h} {q} {k}"
                );
            }
        }
    }
}
