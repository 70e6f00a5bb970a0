//! BERT's pre-training corruption (Devlin et al. 2019, §3.1): each ordinary token is chosen for
//! prediction with probability 15%; a chosen token becomes `[MASK]` 80% of the time, a random token 10%,
//! and stays as it is 10%. Special tokens and padding are never chosen (as `DataCollatorForLanguageModeling`).
//!
//! With whole-word masking (BERT's later release) the unit is a word instead of a token: 15% of the words
//! are chosen, and every WordPiece of a chosen word is masked, randomised or kept together. A model trained on
//! single pieces learns to guess a word's `##` ending from its visible start; a masked word hides them all.

use burn::config::Config;
use rand::Rng;

#[derive(Config, Debug)]
pub struct MaskingConfig {
    /// Share of ordinary tokens (or words) chosen for prediction.
    #[config(default = 0.15)]
    pub mlm_probability: f64,
    /// Of the chosen: share replaced by `[MASK]`.
    #[config(default = 0.8)]
    pub mask_probability: f64,
    /// Of the chosen: share replaced by a random vocabulary token (the rest stay unchanged).
    #[config(default = 0.1)]
    pub random_probability: f64,
    /// Choose whole words (a piece and the `##` pieces after it) instead of single tokens.
    #[config(default = false)]
    pub whole_word: bool,
}

/// One corrupted sequence: what the model reads, and the original token where it must predict one.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedSequence {
    pub input_ids: Vec<u32>,
    pub labels: Vec<Option<u32>>,
}

/// The ids the masking needs from the tokenizer.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub mask_id: u32,
    pub size: usize,
    /// `[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`: never chosen.
    pub special_ids: Vec<u32>,
    /// Per id: whether the token continues a word (WordPiece's `##` pieces).
    pub continues_word: Vec<bool>,
}

impl Vocabulary {
    fn continues_word(&self, id: u32) -> bool {
        self.continues_word
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }
}

impl MaskingConfig {
    /// The positions that are chosen or left together: each eligible token, or each word.
    fn units(&self, ids: &[u32], vocab: &Vocabulary) -> Vec<Vec<usize>> {
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut previous_eligible = false;
        for (t, id) in ids.iter().enumerate() {
            let eligible = !vocab.special_ids.contains(id);
            match units.last_mut() {
                Some(word)
                    if self.whole_word
                        && eligible
                        && previous_eligible
                        && vocab.continues_word(*id) =>
                {
                    word.push(t)
                }
                _ if eligible => units.push(vec![t]),
                _ => {}
            }
            previous_eligible = eligible;
        }
        units
    }

    /// Corrupts a batch. At least one token (or word) of the batch is chosen when any is eligible, so that
    /// the loss is defined even for a batch of very short sequences.
    pub fn apply(
        &self,
        sequences: &[Vec<u32>],
        vocab: &Vocabulary,
        rng: &mut impl Rng,
    ) -> Vec<MaskedSequence> {
        let units: Vec<Vec<Vec<usize>>> =
            sequences.iter().map(|ids| self.units(ids, vocab)).collect();
        let mut chosen: Vec<Vec<bool>> = units
            .iter()
            .map(|units| {
                units
                    .iter()
                    .map(|_| rng.random_bool(self.mlm_probability))
                    .collect()
            })
            .collect();
        if !chosen.iter().flatten().any(|&c| c) {
            let candidates: Vec<(usize, usize)> = units
                .iter()
                .enumerate()
                .flat_map(|(s, units)| (0..units.len()).map(move |u| (s, u)))
                .collect();
            if !candidates.is_empty() {
                let (s, u) = candidates[rng.random_range(0..candidates.len())];
                chosen[s][u] = true;
            }
        }
        sequences
            .iter()
            .zip(units)
            .zip(chosen)
            .map(|((ids, units), chosen)| {
                let mut input_ids = ids.clone();
                let mut labels = vec![None; ids.len()];
                for (unit, _) in units.iter().zip(chosen).filter(|(_, c)| *c) {
                    let roll: f64 = rng.random();
                    for &t in unit {
                        labels[t] = Some(ids[t]);
                        if roll < self.mask_probability {
                            input_ids[t] = vocab.mask_id;
                        } else if roll < self.mask_probability + self.random_probability {
                            input_ids[t] = rng.random_range(0..vocab.size as u32);
                        }
                    }
                }
                MaskedSequence { input_ids, labels }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const CLS: u32 = 101;
    const SEP: u32 = 102;
    const MASK: u32 = 103;
    const SPECIALS: [u32; 5] = [0, 100, CLS, SEP, MASK];

    fn vocab() -> Vocabulary {
        Vocabulary {
            mask_id: MASK,
            size: 30522,
            special_ids: SPECIALS.to_vec(),
            continues_word: Vec::new(),
        }
    }

    /// 400 sequences of `[CLS] 2000..2030 [SEP]` padded with `[PAD]` to 40.
    fn corpus() -> Vec<Vec<u32>> {
        (0..400)
            .map(|_| {
                let mut ids = vec![CLS];
                ids.extend(2000..2030);
                ids.push(SEP);
                ids.resize(40, 0);
                ids
            })
            .collect()
    }

    #[test]
    fn chooses_15_percent_and_splits_80_10_10() {
        let sequences = corpus();
        let masked =
            MaskingConfig::new().apply(&sequences, &vocab(), &mut StdRng::seed_from_u64(7));
        let (mut chosen, mut to_mask, mut kept, mut random) = (0, 0, 0, 0);
        for (original, m) in sequences.iter().zip(&masked) {
            assert_eq!(
                (m.labels.len(), m.input_ids.len()),
                (original.len(), original.len())
            );
            for ((&token, &label), &input) in original.iter().zip(&m.labels).zip(&m.input_ids) {
                match label {
                    None => assert_eq!(input, token, "unchosen token changed"),
                    Some(label) => {
                        assert_eq!(label, token);
                        assert!(!SPECIALS.contains(&token), "special token chosen");
                        chosen += 1;
                        match input {
                            MASK => to_mask += 1,
                            id if id == token => kept += 1,
                            _ => random += 1,
                        }
                    }
                }
            }
        }
        let eligible = 400.0 * 30.0;
        let share = chosen as f64 / eligible;
        assert!((share - 0.15).abs() < 0.01, "chose {share}");
        let chosen = chosen as f64;
        assert!((to_mask as f64 / chosen - 0.8).abs() < 0.02, "{to_mask}");
        // A random draw can hit the original token (1 in 30522): "kept" is 10% within noise.
        assert!((kept as f64 / chosen - 0.1).abs() < 0.015, "{kept}");
        assert!((random as f64 / chosen - 0.1).abs() < 0.015, "{random}");
    }

    #[test]
    fn same_seed_same_corruption_and_never_an_empty_batch() {
        let config = MaskingConfig::new();
        let sequences = corpus();
        let a = config.apply(&sequences, &vocab(), &mut StdRng::seed_from_u64(1));
        let b = config.apply(&sequences, &vocab(), &mut StdRng::seed_from_u64(1));
        let c = config.apply(&sequences, &vocab(), &mut StdRng::seed_from_u64(2));
        assert_eq!(a, b);
        assert_ne!(a, c);

        let short = vec![vec![CLS, 2000, SEP]];
        for seed in 0..50 {
            let m = config.apply(&short, &vocab(), &mut StdRng::seed_from_u64(seed));
            assert_eq!(m[0].labels, vec![None, Some(2000), None]);
        }
        let only_specials = vec![vec![CLS, SEP, 0]];
        let m = config.apply(&only_specials, &vocab(), &mut StdRng::seed_from_u64(0));
        assert!(m[0].labels.iter().all(Option::is_none));
    }

    #[test]
    fn whole_words_are_chosen_and_corrupted_together() {
        // Ids 3000..3010 are `##` pieces: each sequence is ten words of a start and a `##` piece, then
        // [SEP]; a piece right after [CLS] would still start a word.
        let mut continues_word = vec![false; 30522];
        continues_word[3000..3010].fill(true);
        let vocab = Vocabulary {
            continues_word,
            ..vocab()
        };
        let sequences: Vec<Vec<u32>> = (0..400)
            .map(|_| {
                let mut ids = vec![CLS];
                for w in 0..10 {
                    ids.extend([2000 + w, 3000 + w]);
                }
                ids.push(SEP);
                ids
            })
            .collect();
        let config = MaskingConfig::new().with_whole_word(true);
        let masked = config.apply(&sequences, &vocab, &mut StdRng::seed_from_u64(3));
        let (mut words, mut to_mask) = (0, 0);
        for (original, m) in sequences.iter().zip(&masked) {
            for w in 0..10 {
                let (start, piece) = (1 + 2 * w, 2 + 2 * w);
                assert_eq!(
                    m.labels[start].is_some(),
                    m.labels[piece].is_some(),
                    "a word was split"
                );
                if m.labels[start].is_none() {
                    assert_eq!(m.input_ids[start..=piece], original[start..=piece]);
                    continue;
                }
                words += 1;
                let masks = [start, piece]
                    .iter()
                    .filter(|&&t| m.input_ids[t] == MASK)
                    .count();
                assert_ne!(masks, 1, "one piece masked, the other not");
                to_mask += usize::from(masks == 2);
            }
        }
        let share = words as f64 / 4000.0;
        assert!((share - 0.15).abs() < 0.015, "chose {share} of the words");
        assert!(
            (to_mask as f64 / words as f64 - 0.8).abs() < 0.04,
            "{to_mask}"
        );

        // Token masking of the same batch splits words.
        let tokens = MaskingConfig::new().apply(&sequences, &vocab, &mut StdRng::seed_from_u64(3));
        assert!(tokens.iter().any(|m| {
            (0..10).any(|w| m.labels[1 + 2 * w].is_some() != m.labels[2 + 2 * w].is_some())
        }));
    }
}
