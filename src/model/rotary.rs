//! Rotary position embeddings (RoPE; Su et al., "RoFormer", 2021), ModernBERT's positions: no learned table,
//! but every query and key turned, pair of dimensions by pair, by angles proportional to its token's position,
//! so that a query·key product depends on how far apart the two tokens are. ModernBERT turns them more slowly
//! in its global layers (`rope_theta` 160,000) than in its local ones (10,000).

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::config::{LayerType, RopeTheta};

/// The angles of one head's dimension pairs, per kind of layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotaryEmbedding {
    pub head_dim: usize,
    pub theta: RopeTheta,
}

/// cos and sin of each position's angles, `[1, seq, 1, head_dim]`: one kind of layer, one sequence length.
#[derive(Debug, Clone)]
pub struct Rotation {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RotaryEmbedding {
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
        let table = |values: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values, [1, seq, 1, dim]), device)
        };
        Rotation {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

impl Rotation {
    /// `x` `[batch, seq, heads, head_dim]` turned by each position's angles: `x·cos + rotate_half(x)·sin`,
    /// `rotate_half` putting the negated second half before the first (transformers' `apply_rotary_pos_emb`).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let rotated = Tensor::cat(
            vec![
                -x.clone().narrow(3, half, half),
                x.clone().narrow(3, 0, half),
            ],
            3,
        );
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query and a key turned by their positions: their product depends on the distance alone, and
    /// position 0 is not turned.
    #[test]
    fn products_depend_on_the_distance() {
        let device = Device::flex();
        let rope = RotaryEmbedding {
            head_dim: 4,
            theta: RopeTheta {
                full: 10_000.0,
                sliding: 100.0,
            },
        };
        let read = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
        for layer_type in [LayerType::Full, LayerType::Sliding] {
            let rotation = rope.forward(6, layer_type, &device);
            let q = [0.3f32, -1.2, 0.7, 2.0];
            let k = [1.1f32, 0.4, -0.9, 0.5];
            let same = |v: [f32; 4]| {
                Tensor::<4>::from_data(TensorData::new(v.repeat(6), [1, 6, 1, 4]), &device)
            };
            let (q, k) = (read(rotation.apply(same(q))), read(rotation.apply(same(k))));
            let dot =
                |i: usize, j: usize| -> f32 { (0..4).map(|d| q[i * 4 + d] * k[j * 4 + d]).sum() };
            assert_eq!(q[..4], [0.3, -1.2, 0.7, 2.0]);
            for (a, b) in [((0, 2), (3, 5)), ((4, 1), (5, 2)), ((1, 1), (4, 4))] {
                assert!((dot(a.0, a.1) - dot(b.0, b.1)).abs() < 1e-5, "{a:?} {b:?}");
            }
            assert!((dot(0, 1) - dot(0, 3)).abs() > 1e-3);
        }
    }
}
