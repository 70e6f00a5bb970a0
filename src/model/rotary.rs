//! Rotary position embeddings (RoPE; Su et al., "RoFormer", 2021), ModernBERT's positions: no learned table,
//! but every query and key turned, pair of dimensions by pair, by angles proportional to its token's position,
//! so that a query·key product depends on how far apart the two tokens are. ModernBERT turns them more slowly
//! in its global layers (`rope_theta` 160,000) than in its local ones (10,000).

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::config::{LayerType, RopeTheta};
use crate::model::length_cache::LengthCache;
use crate::ops::rotary::rotate_queries_keys;

/// The angles of one head's dimension pairs, per kind of layer.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    pub head_dim: usize,
    pub theta: RopeTheta,
    /// Both kinds of layers' rotations, kept between calls (computed and written every call, they were 2 M
    /// cosines and sines and 8 MB at 8,192 tokens).
    cache: LengthCache<[Rotation; 2]>,
}

/// cos and sin of each position's angles, `[seq, head_dim]`: one kind of layer, one sequence length.
#[derive(Debug, Clone)]
pub struct Rotation {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, theta: RopeTheta) -> Self {
        Self {
            head_dim,
            theta,
            cache: LengthCache::default(),
        }
    }

    /// The rotations of positions `0..seq` in global and in local layers, from the cache where it holds
    /// them.
    pub fn rotations(&self, seq: usize, device: &Device) -> [Rotation; 2] {
        let rotations = self.cache.at_least(seq, device, |positions| {
            [LayerType::Full, LayerType::Sliding].map(|t| self.forward(positions, t, device))
        });
        rotations.map(|rotation| rotation.first(seq))
    }

    /// The rotation of positions `0..seq` in layers of `layer_type`. Computed on the host in f32 as
    /// transformers does (frequencies `1 / θ^(2i / d)`, angles `position · frequency`): WGSL's cos and sin
    /// are not that accurate at the angles of long texts.
    pub fn forward(&self, seq: usize, layer_type: LayerType, device: &Device) -> Rotation {
        let theta = self.theta.of(layer_type) as f32;
        let dim = self.head_dim;
        let inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
            .collect();
        let (mut cos, mut sin) = (Vec::with_capacity(seq * dim), Vec::with_capacity(seq * dim));
        for position in 0..seq {
            // Both halves of a head turn by the same angles (`torch.cat((freqs, freqs))`).
            for frequency in inv_freq.iter().chain(&inv_freq) {
                let angle = position as f32 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table =
            |values: Vec<f32>| Tensor::<2>::from_data(TensorData::new(values, [seq, dim]), device);
        Rotation {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

impl Rotation {
    /// Positions `0..seq` only: views of the first rows.
    fn first(self, seq: usize) -> Self {
        Rotation {
            cos: self.cos.narrow(0, 0, seq),
            sin: self.sin.narrow(0, 0, seq),
        }
    }

    /// The fused projection `qkv` `[batch, seq, 3 × hidden]` with every head of Q and K turned by its
    /// position's angles: `x·cos + rotate_half(x)·sin`, `rotate_half` putting the negated second half
    /// before the first (transformers' `apply_rotary_pos_emb`).
    pub fn apply(&self, qkv: Tensor<3>, num_heads: usize) -> Tensor<3> {
        rotate_queries_keys(qkv, self.cos.clone(), self.sin.clone(), num_heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached rotations of a sequence, shorter than the one that filled the cache or longer (which
    /// refills it), are those computed for its length alone.
    #[test]
    fn cached_rotations_are_the_sequences_own() {
        let device = Device::flex();
        let rope = RotaryEmbedding::new(
            8,
            RopeTheta {
                full: 160_000.0,
                sliding: 10_000.0,
            },
        );
        let values = |t: &Tensor<2>| t.clone().into_data().try_into_vec::<f32>().unwrap();
        for seq in [7, 5, 1, 20, 9] {
            let cached = rope.rotations(seq, &device);
            for (rotation, layer_type) in cached.iter().zip([LayerType::Full, LayerType::Sliding]) {
                let own = rope.forward(seq, layer_type, &device);
                assert_eq!(rotation.cos.dims(), [seq, 8]);
                assert_eq!(
                    values(&rotation.cos),
                    values(&own.cos),
                    "{seq} {layer_type:?}"
                );
                assert_eq!(
                    values(&rotation.sin),
                    values(&own.sin),
                    "{seq} {layer_type:?}"
                );
            }
        }
    }

    /// A query and a key turned by their positions: their product depends on the distance alone,
    /// position 0 is not turned, and V is left as it was.
    #[test]
    fn products_depend_on_the_distance() {
        let device = Device::flex();
        let rope = RotaryEmbedding::new(
            4,
            RopeTheta {
                full: 10_000.0,
                sliding: 100.0,
            },
        );
        let (q, k, v) = (
            [0.3f32, -1.2, 0.7, 2.0],
            [1.1f32, 0.4, -0.9, 0.5],
            [5.0f32, 6.0, 7.0, 8.0],
        );
        // One head: Q, K and V side by side, the same at all 6 positions.
        let row: Vec<f32> = [q, k, v].concat();
        let qkv = Tensor::<3>::from_data(TensorData::new(row.repeat(6), [1, 6, 12]), &device);
        for layer_type in [LayerType::Full, LayerType::Sliding] {
            let rotation = rope.forward(6, layer_type, &device);
            let out = rotation
                .apply(qkv.clone(), 1)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let at = |i: usize, part: usize| &out[i * 12 + part * 4..i * 12 + part * 4 + 4];
            let dot = |i: usize, j: usize| -> f32 {
                at(i, 0).iter().zip(at(j, 1)).map(|(q, k)| q * k).sum()
            };
            assert_eq!(at(0, 0), q);
            assert_eq!(at(0, 1), k);
            assert!((0..6).all(|i| at(i, 2) == v));
            for (a, b) in [((0, 2), (3, 5)), ((4, 1), (5, 2)), ((1, 1), (4, 4))] {
                assert!((dot(a.0, a.1) - dot(b.0, b.1)).abs() < 1e-5, "{a:?} {b:?}");
            }
            assert!((dot(0, 1) - dot(0, 3)).abs() > 1e-3);
        }
    }
}
