//! The held-out test that looks like use: in each sentence one word is masked, as a person tries
//! fill-mask — a whole word that is a single WordPiece token of letters and not a stop word (NLTK's English
//! list), an initial or an abbreviation. The 15%-of-tokens test is dominated by function words and punctuation, which are easy.

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::heads::BertForMaskedLM;
use crate::tokenizer::Tokenizer;
use crate::train::best_five;
use crate::train::masking::MaskedSequence;

/// Sentences shorter than this (in words) give too little context to be fair; longer ones are rare.
const WORDS: std::ops::RangeInclusive<usize> = 6..=40;

/// Abbreviations and numerals that are single WordPieces of letters but no content word, and whose `.`
/// ends no sentence (with any one letter: initials, "e.g.").
const ABBREVIATIONS: [&str; 22] = [
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "viz", "ie", "eg", "cf", "ii", "iii",
    "iv", "vi", "vii", "viii", "ix", "xi", "xii",
];

/// Quotes and brackets that open and close around words.
const OPENING: [char; 5] = ['"', '\'', '(', '“', '‘'];
const CLOSING: [char; 5] = ['"', '\'', ')', '”', '’'];

fn is_abbreviation(word: &str) -> bool {
    word.chars().count() == 1 || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

/// One sentence with one word masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub position: usize,
    pub label: u32,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ContentWordAccuracy {
    pub top1: f64,
    pub top5: f64,
    pub sentences: usize,
    /// How often the top prediction is not a word at all (punctuation, a number, a `##` piece): the
    /// symptom of a model that has seen too little text.
    pub top1_not_a_word: f64,
}

/// The sentences of passages (one per line): split after `.`, `!` or `?` before a capital letter (but
/// not after an abbreviation's `.`: "Mr. Darcy"), kept when they have 6 to 40 words.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut start = 0;
        for (i, word) in words.iter().enumerate() {
            let word = word.trim_end_matches(CLOSING);
            let abbreviated = word
                .strip_suffix('.')
                .is_some_and(|stem| is_abbreviation(stem.trim_start_matches(OPENING)));
            let ends = word.ends_with(['.', '!', '?']) && !abbreviated;
            let next_starts = words.get(i + 1).is_none_or(|next| {
                next.trim_start_matches(OPENING)
                    .starts_with(char::is_uppercase)
            });
            if ends && next_starts || i + 1 == words.len() {
                if WORDS.contains(&(i + 1 - start)) {
                    out.push(words[start..=i].join(" "));
                }
                start = i + 1;
            }
        }
    }
    out
}

/// Whether a vocabulary token is a whole word of letters.
fn is_word(token: &str) -> bool {
    !token.starts_with("##") && token.chars().all(char::is_alphabetic)
}

/// Masks one content word per sentence, chosen by `seed`; sentences without one are left out.
pub fn examples(
    sentences: &[String],
    tokenizer: &Tokenizer,
    seed: u64,
) -> crate::Result<Vec<Example>> {
    let stop_words = stop_words::get("en");
    let mask_id = tokenizer
        .mask_token_id()
        .ok_or_else(|| crate::Error::Tokenizer("the tokenizer has no [MASK] token".into()))?;
    let mut out = Vec::new();
    for (i, sentence) in sentences.iter().enumerate() {
        let encoding = tokenizer.encode(sentence)?;
        let tokens = tokenizer.ids_to_tokens(&encoding.ids);
        let candidates: Vec<usize> = (0..tokens.len())
            .filter(|&t| {
                let whole = !encoding.special[t]
                    && is_word(&tokens[t])
                    && !is_abbreviation(&tokens[t])
                    && tokens.get(t + 1).is_none_or(|next| !next.starts_with("##"));
                whole && !stop_words.contains(&tokens[t].to_lowercase().as_str())
            })
            .collect();
        if candidates.is_empty() || encoding.truncated {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let position = candidates[rng.random_range(0..candidates.len())];
        let mut input_ids = encoding.ids.clone();
        let label = input_ids[position];
        input_ids[position] = mask_id;
        out.push(Example {
            input_ids,
            position,
            label,
        });
    }
    Ok(out)
}

/// Top-1 / top-5 of the masked word over `examples`, 64 sentences a forward pass.
pub fn evaluate(
    model: &BertForMaskedLM,
    examples: &[Example],
    tokenizer: &Tokenizer,
    pad_id: u32,
    device: &Device,
) -> crate::Result<ContentWordAccuracy> {
    let (mut top1, mut top5, mut not_a_word) = (0usize, 0usize, 0usize);
    for chunk in examples.chunks(64) {
        let masked: Vec<MaskedSequence> = chunk
            .iter()
            .map(|e| {
                let mut labels = vec![None; e.input_ids.len()];
                labels[e.position] = Some(e.label);
                MaskedSequence {
                    input_ids: e.input_ids.clone(),
                    labels,
                }
            })
            .collect();
        for (best, label) in best_five(model, &masked, pad_id, device)? {
            top1 += usize::from(best[0] == label);
            top5 += usize::from(best.contains(&label));
            let first = tokenizer.id_to_token(best[0] as u32).unwrap_or_default();
            not_a_word += usize::from(!is_word(&first));
        }
    }
    let n = examples.len().max(1) as f64;
    Ok(ContentWordAccuracy {
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        sentences: examples.len(),
        top1_not_a_word: not_a_word as f64 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences_and_keeps_those_of_6_to_40_words() {
        let text = "The cat sat on the warm mat. It slept there all day long, as cats do! Short one. \
                    \"Why would anyone write this sentence?\" she asked her old friend.\n\
                    A line without a full stop still counts as one sentence\n\
                    Then Mr. Darcy came into the room. J. R. Smith wrote it, e.g. the book on birds.";
        assert_eq!(
            sentences(text),
            [
                "The cat sat on the warm mat.",
                "It slept there all day long, as cats do!",
                "\"Why would anyone write this sentence?\" she asked her old friend.",
                "A line without a full stop still counts as one sentence",
                "Then Mr. Darcy came into the room.",
                "J. R. Smith wrote it, e.g. the book on birds.",
            ]
        );
    }

    #[test]
    fn words_are_letters_and_not_pieces() {
        assert!(is_word("guitar"));
        assert!(!is_word("##ar"));
        assert!(!is_word(","));
        assert!(!is_word("1999"));
        // Words, but never the masked one.
        assert!(["x", "Mr", "etc", "iii"].iter().all(|w| is_abbreviation(w)));
        assert!(!["ox", "guitar", "Darcy"].iter().any(|w| is_abbreviation(w)));
    }
}
