//! The training text, one passage per line, tokenized once, and each epoch's batches of it.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::Error;
use crate::tokenizer::{Tokenizer, on_every_core};

/// The corpus, one passage per line, tokenized once.
pub struct Corpus {
    pub(super) sequences: Vec<Vec<u32>>,
}

impl Corpus {
    /// Tokenizes the non-empty lines on every core (a GPU run's corpus is tens of millions of tokens).
    pub fn from_text(text: &str, tokenizer: &Tokenizer, max_len: usize) -> crate::Result<Self> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return Err(Error::Input("the corpus has no text".into()));
        }
        let sequences = on_every_core(&lines, |line| {
            let mut ids = tokenizer.encode(line)?.ids;
            if ids.len() > max_len {
                let sep = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(sep);
            }
            Ok(ids)
        });
        Ok(Self {
            sequences: sequences.into_iter().collect::<crate::Result<_>>()?,
        })
    }

    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// The epoch's batches as passage indices: shuffled, then grouped so that passages of similar length
    /// share a batch (little padding), then the batches shuffled.
    pub(super) fn epoch(&self, epoch: usize, batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut rng =
            StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut order: Vec<usize> = (0..self.sequences.len()).collect();
        order.shuffle(&mut rng);
        let mut batches = Vec::new();
        for pool in order.chunks(batch_size * 50) {
            let mut pool = pool.to_vec();
            pool.sort_by_key(|&i| self.sequences[i].len());
            batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
    }
}
