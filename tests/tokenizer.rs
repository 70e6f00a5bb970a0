//! Token ids and offsets identical to Hugging Face's BertTokenizerFast (fixture from scripts/reference.py).

mod common;

use serde_json::Value;
use webbert::Tokenizer;

fn fixture() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("tokenizer.json")).unwrap(),
    )
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

fn check_cases(tokenizer: &Tokenizer, with_offsets: bool) {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 300);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let encoding = tokenizer.encode(text).unwrap();
        assert_eq!(encoding.ids, ids(&case["ids"]), "ids for {text:?}");
        if with_offsets {
            let offsets: Vec<(usize, usize)> = case["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o[0].as_u64().unwrap() as usize,
                        o[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(encoding.offsets, offsets, "offsets for {text:?}");
        }
    }
}

fn from_json() -> Tokenizer {
    let dir = common::minilm_dir();
    Tokenizer::from_tokenizer_json(&std::fs::read(dir.join("tokenizer.json")).unwrap(), 512)
        .unwrap()
}

#[test]
fn tokenizer_json_matches_reference_ids_and_offsets() {
    let tokenizer = from_json();
    assert!(tokenizer.has_fast_path());
    check_cases(&tokenizer, true);
    check_cases(&tokenizer.without_fast_path(), true);
}

#[test]
fn encode_all_gives_every_text_its_reference_ids_in_order() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let encodings = from_json().encode_all(&texts).unwrap();
    assert_eq!(encodings.len(), cases.len());
    for ((case, text), encoding) in cases.iter().zip(&texts).zip(&encodings) {
        assert_eq!(encoding.ids, ids(&case["ids"]), "ids for {text:?}");
    }
}

#[test]
fn vocab_txt_matches_reference_ids() {
    let dir = common::minilm_dir();
    let vocab = std::fs::read(dir.join("vocab.txt")).unwrap();
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    let tokenizer = Tokenizer::from_vocab(&vocab, Some(&config), 512).unwrap();
    assert!(tokenizer.has_fast_path());
    check_cases(&tokenizer, true);
    check_cases(&tokenizer.without_fast_path(), true);
}

#[test]
fn pairs_get_segment_ids() {
    let fixture = fixture();
    let pair = &fixture["pair"];
    let encoding = from_json()
        .encode_pair(pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap())
        .unwrap();
    assert_eq!(encoding.ids, ids(&pair["ids"]));
    assert_eq!(encoding.token_type_ids, ids(&pair["token_type_ids"]));
}

#[test]
fn long_text_is_truncated_to_max_positions_and_says_so() {
    let fixture = fixture();
    let long = &fixture["long"];
    let encoding = from_json().encode(long["text"].as_str().unwrap()).unwrap();
    assert_eq!(encoding.ids.len(), 512);
    assert_eq!(encoding.ids, ids(&long["ids"]));
    assert!(encoding.truncated);
    assert!(!from_json().encode("short text").unwrap().truncated);
}

#[test]
fn fast_path_stops_early_on_long_texts_with_the_same_result() {
    let tokenizer = from_json();
    let slow = from_json().without_fast_path();
    let fixture = fixture();
    let long = fixture["long"]["text"].as_str().unwrap().repeat(200);
    let mut texts = vec![long];
    // Around the limit: 510 words fit beside [CLS] and [SEP], 511 do not.
    texts.extend((508..=513).map(|n| "word ".repeat(n)));
    texts.push(format!("{} [MASK] tail", "x ".repeat(509)));
    for text in &texts {
        let (fast, reference) = (tokenizer.encode(text).unwrap(), slow.encode(text).unwrap());
        assert_eq!(fast, reference, "{} characters", text.len());
    }
    assert!(!tokenizer.encode(&texts[3]).unwrap().truncated);
    assert!(tokenizer.encode(&texts[4]).unwrap().truncated);
}

/// Found by fuzz::any_text_through_the_pipelines: NFD sorts combining marks across characters, so a
/// kept mark lands elsewhere than character-by-character stripping puts it (U+1E01B is no nonspacing mark
/// in the crate's tables; U+0EC8 is, and sorts before it).
#[test]
fn combining_marks_that_nfd_reorders_give_the_normalisers_offsets() {
    let fast = from_json();
    let slow = from_json().without_fast_path();
    for text in [
        "\u{1e01b}\u{ec8}",
        "x\u{1e01b}\u{0}\u{ec8} y",
        "e\u{301}\u{316}\u{1e01b}\u{ec8}\u{1e01b}",
        "cafe\u{301} \u{1e01b} \u{ec8}",
    ] {
        assert_eq!(
            fast.encode(text).unwrap(),
            slow.encode(text).unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn mask_written_in_text_is_the_mask_token() {
    let tokenizer = from_json();
    let encoding = tokenizer.encode("Paris is the [MASK] of France.").unwrap();
    assert_eq!(tokenizer.ids_to_tokens(&encoding.ids)[4], "[MASK]");
    assert_eq!(Some(encoding.ids[4]), tokenizer.mask_token_id());
    assert_eq!(encoding.offsets[4], (13, 19));
}

/// A pair is cut as `tokenizers` (transformers' fast tokenizers) cuts it, on both paths, for WordPiece,
/// byte-level BPE (RoBERTa's post-processor trims offsets) and Unigram: longest first, the odd token of an
/// odd budget (61 beside the special tokens) to the longer text, words cut between pieces; texts of many
/// thousands of tokens give what their first pieces give.
#[test]
fn long_pairs_are_cut_longest_first_as_tokenizers_cuts_them() {
    let fixtures = common::fixtures();
    let tokenizers = [
        (common::minilm_dir().join("tokenizer.json"), 64),
        (fixtures.join("tiny-roberta/tokenizer.json"), 65),
        (fixtures.join("tiny-albert/tokenizer.json"), 64),
    ];
    let text = |word: &str, n: usize| format!("{word} ").repeat(n);
    let lengths = [
        (5, 100),
        (100, 5),
        (40, 200),
        (200, 40),
        (90, 90),
        (31, 30),
        (30, 31),
        (58, 3),
        (0, 70),
    ];
    for (path, max_len) in tokenizers {
        let mut reference = tokenizers::Tokenizer::from_file(&path).unwrap();
        reference
            .with_padding(None)
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .unwrap();
        let ours = Tokenizer::from_tokenizer_json(&std::fs::read(&path).unwrap(), max_len).unwrap();
        for tokenizer in [&ours, &ours.clone().without_fast_path()] {
            for (n, m) in lengths {
                // "unbelievably" is several pieces: cuts fall inside words.
                let (a, b) = (text("apple", n), text("unbelievably", m));
                let want = reference
                    .encode_char_offsets((a.as_str(), b.as_str()), true)
                    .unwrap();
                let got = tokenizer.encode_pair(&a, &b).unwrap();
                let case = format!("{}: {n} and {m} words", path.display());
                assert_eq!(got.ids, want.get_ids(), "{case}");
                assert_eq!(got.token_type_ids, want.get_type_ids(), "{case}");
                assert_eq!(got.offsets, want.get_offsets(), "{case}");
                assert_eq!(got.truncated, !want.get_overflowing().is_empty(), "{case}");
            }
            let (a, b) = (text("apple pie", 30_000), text("unbelievably", 25_000));
            let got = tokenizer.encode_pair(&a, &b).unwrap();
            let first =
                (tokenizer.encode_pair(&text("apple pie", 40), &text("unbelievably", 40))).unwrap();
            assert_eq!((got.ids.len(), got.truncated), (max_len, true));
            assert_eq!(got, first);
        }
    }
}
