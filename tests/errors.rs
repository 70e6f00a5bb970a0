//! Bad input gives an error that says what is wrong, never a panic.

mod common;

use safetensors::tensor::{Dtype, TensorView};
use webbert::{
    Backend, BertConfig, Checkpoint, Classifier, Embedder, Error, FillMask, ModelFiles, Pooling,
    Tokenizer, TokenizerFiles, WeightsDtype,
};

fn tiny_dir() -> std::path::PathBuf {
    common::fixtures().join("tiny-mlm")
}

fn tiny_config() -> String {
    std::fs::read_to_string(tiny_dir().join("config.json")).unwrap()
}

fn tiny_tokenizer() -> TokenizerFiles {
    TokenizerFiles::Vocab {
        vocab: std::fs::read(tiny_dir().join("vocab.txt")).unwrap(),
        config: None,
    }
}

/// The tiny checkpoint's tensors as `(name, dtype, shape, bytes)`, for editing.
fn tiny_tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect()
}

/// The tensor `name` of [`tiny_tensors`], for editing.
fn named<'t>(
    tensors: &'t mut [(String, Dtype, Vec<usize>, Vec<u8>)],
    name: &str,
) -> &'t mut (String, Dtype, Vec<usize>, Vec<u8>) {
    tensors.iter_mut().find(|t| t.0 == name).unwrap()
}

fn serialize(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_mlm(bytes: Vec<u8>) -> webbert::Result<FillMask> {
    let files = ModelFiles::new(
        &tiny_config(),
        tiny_tokenizer(),
        Checkpoint::from_safetensors(bytes)?,
    )?;
    FillMask::load(files, Backend::Cpu.device()?)
}

fn message<T>(result: webbert::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// A DeBERTa-v3-like config.json with `extra` fields (which win over the defaults here).
fn deberta(extra: &str) -> String {
    format!(
        r#"{{"model_type": "deberta-v2", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "relative_attention": true, "share_att_key": true, "pos_att_type": "p2c|c2p", {extra}}}"#
    )
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        ("not json", "not valid JSON"),
        (
            r#"{"model_type": "deberta", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4}"#,
            "field `model_type` = \"deberta\" is not supported yet (only bert, roberta, xlm-roberta, distilbert, albert, electra, mpnet, modernbert, deberta-v2)",
        ),
        (
            r#"{"vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4}"#,
            "missing field `hidden_size`",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "hidden_act": "swish"}"#,
            "`hidden_act` = \"swish\" is not supported",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 6, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 4}"#,
            "must be a multiple of `num_attention_heads`",
        ),
        (
            r#"{"vocab_size": -3, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4}"#,
            "`vocab_size` must be a positive integer",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "position_embedding_type": "relative_key"}"#,
            "`position_embedding_type`",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 10}"#,
            "`pad_token_id` (10) must be below `vocab_size` (10)",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "max_position_embeddings": 1}"#,
            "`max_position_embeddings` (1) must be at least 3",
        ),
        (
            r#"{"model_type": "albert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 3, "num_hidden_groups": 2, "num_attention_heads": 1, "intermediate_size": 4}"#,
            "`num_hidden_groups` (2) must divide `num_hidden_layers` (3)",
        ),
        (
            r#"{"model_type": "albert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 2, "inner_group_num": 2, "num_attention_heads": 1, "intermediate_size": 4}"#,
            "`inner_group_num` must be 1",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 2, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 0, "layer_types": ["full_attention"]}"#,
            "`layer_types` must list \"full_attention\" or \"sliding_attention\" for each of the 2 layers",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 0, "rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 10.0}}}"#,
            "`rope_parameters.full_attention.rope_type` = \"yarn\" is not supported (only \"default\")",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 0, "rope_scaling": {"type": "linear", "factor": 2.0}}"#,
            "`rope_scaling`",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 6, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4, "pad_token_id": 0}"#,
            "rotary positions need heads of an even width, not 3",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 0, "classifier_pooling": "max"}"#,
            "`classifier_pooling` = \"max\" is not supported",
        ),
        (
            r#"{"model_type": "modernbert", "vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "pad_token_id": 0, "norm_bias": "yes"}"#,
            "field `norm_bias` must be true or false",
        ),
        (
            &deberta(r#""conv_kernel_size": 3"#),
            "field `conv_kernel_size` = 3 is not supported",
        ),
        (
            &deberta(r#""share_att_key": false"#),
            "DeBERTa without `share_att_key` is not supported",
        ),
        (
            &deberta(r#""relative_attention": false"#),
            "DeBERTa without `relative_attention` is not supported",
        ),
        (
            &deberta(r#""pos_att_type": 3"#),
            "field `pos_att_type` must be a list of \"c2p\" and \"p2c\", found 3",
        ),
        (
            &deberta(r#""pooler_hidden_size": 8"#),
            "field `pooler_hidden_size` = 8 is not supported (only `hidden_size`, 4)",
        ),
        (
            &deberta(r#""position_buckets": 8, "max_relative_positions": 5"#),
            "leave no room for logarithmic buckets",
        ),
    ];
    for (json, expected) in cases {
        let err = BertConfig::from_hf_json(json).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
    }
    let ok = BertConfig::from_hf_json(&tiny_config()).unwrap();
    assert_eq!(
        (ok.hidden_size, ok.num_attention_heads, ok.vocab_size),
        (32, 4, 1000)
    );
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = tiny_tensors();
    tensors.retain(|t| t.0 != "bert.encoder.layer.1.attention.self.key.weight");
    let err = message(load_mlm(serialize(&tensors)));
    assert!(
        err.contains("tensor `bert.encoder.layer.1.attention.self.key.weight` is missing"),
        "{err}"
    );
}

#[test]
fn wrongly_shaped_tensor_names_expected_and_found_shape() {
    let mut tensors = tiny_tensors();
    let t = named(
        &mut tensors,
        "bert.encoder.layer.0.intermediate.dense.weight",
    );
    t.2 = vec![32, 64]; // transposed: same bytes, wrong shape
    let err = message(load_mlm(serialize(&tensors)));
    assert!(
        err.contains(
            "`bert.encoder.layer.0.intermediate.dense.weight` has shape [32, 64], expected [64, 32]"
        ),
        "{err}"
    );
    // Sizes in config.json far past the file's are an error before they allocate anything (found by
    // fuzz::config_json: the process aborted allocating 2^60 floats).
    for (field, size) in [("intermediate_size", 1u64 << 60), ("hidden_size", 1 << 40)] {
        let mut config: serde_json::Value = serde_json::from_str(&tiny_config()).unwrap();
        config[field] = size.into();
        let checkpoint = Checkpoint::from_safetensors(serialize(&tiny_tensors())).unwrap();
        let files = ModelFiles::new(&config.to_string(), tiny_tokenizer(), checkpoint).unwrap();
        let err = message(FillMask::load(files, Backend::Cpu.device().unwrap()));
        assert!(
            err.contains("expected [") && err.contains(&size.to_string()),
            "{err}"
        );
    }
}

#[test]
fn non_finite_weights_are_refused() {
    let mut tensors = tiny_tensors();
    let t = named(&mut tensors, "cls.predictions.bias");
    assert_eq!(t.1, Dtype::F32);
    t.3[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = message(load_mlm(serialize(&tensors)));
    assert!(
        err.contains("`cls.predictions.bias` holds NaN at index 3: the checkpoint is damaged"),
        "{err}"
    );
}

#[test]
fn mistyped_tensor_is_an_error() {
    let mut tensors = tiny_tensors();
    let t = named(&mut tensors, "cls.predictions.bias");
    t.1 = Dtype::I32;
    let err = message(load_mlm(serialize(&tensors)));
    assert!(
        err.contains(
            "`cls.predictions.bias` has dtype I32, expected F32, F16, BF16 (or I8 for a matrix)"
        ),
        "{err}"
    );
    // An int8 matrix needs its scales beside it (a q8 variant's `{name}_scale`).
    let mut tensors = tiny_tensors();
    let t = named(
        &mut tensors,
        "bert.encoder.layer.0.intermediate.dense.weight",
    );
    t.1 = Dtype::I8;
    t.3.truncate(t.3.len() / 4);
    let err = message(load_mlm(serialize(&tensors)));
    assert!(
        err.contains("tensor `bert.encoder.layer.0.intermediate.dense.weight_scale` is missing"),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let bytes = serialize(&tiny_tensors());
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = message(Checkpoint::from_safetensors(bytes[..cut].to_vec()));
        assert!(
            err.contains("not a valid safetensors file"),
            "cut at {cut}: {err}"
        );
    }
    // A header claiming an enormous length must not be trusted (no huge allocation, no panic).
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(message(Checkpoint::from_safetensors(huge)).contains("not a valid safetensors file"));
    let mut garbage = 20u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"this is not json....");
    assert!(
        message(Checkpoint::from_safetensors(garbage)).contains("not a valid safetensors file")
    );
}

#[test]
fn sharded_checkpoint_errors() {
    let dir = common::fixtures().join("tiny-mlm-bf16-sharded");
    let index = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    let names = Checkpoint::shard_names(&index).unwrap();
    assert_eq!(names.len(), 3);
    let shards: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), std::fs::read(dir.join(n)).unwrap()))
        .collect();
    assert!(Checkpoint::from_shards(&index, shards.clone()).is_ok());

    let err = message(Checkpoint::from_shards(&index, shards[1..].to_vec()));
    assert!(
        err.contains(&format!("shard {} (holding `", names[0])) && err.contains("was not provided"),
        "{err}"
    );

    let mut swapped = shards.clone();
    swapped[0].0 = names[1].clone();
    swapped[1].0 = names[0].clone();
    assert!(message(Checkpoint::from_shards(&index, swapped)).contains("but that shard lacks it"));

    assert!(
        message(Checkpoint::from_shards("{}", shards.clone()))
            .contains("model.safetensors.index.json")
    );
    let unsafe_index = r#"{"weight_map": {"a": "../../etc/passwd"}}"#;
    assert!(message(Checkpoint::shard_names(unsafe_index)).contains("unsafe shard path"));
}

/// Found by fuzz::tokenizer_json: files `tokenizers` reads, then panics on (a trap in the browser).
#[test]
fn tokenizer_json_that_would_panic_in_tokenizers_is_an_error() {
    let path = common::fixtures().join("tiny-mlm-bf16-sharded/tokenizer.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json = json.clone();
        edit(&mut json);
        json.to_string().into_bytes()
    };
    let undefined =
        edited(&|j| j["post_processor"]["single"][0]["SpecialToken"]["id"] = "[CLX]".into());
    assert_eq!(
        message(Tokenizer::from_tokenizer_json(&undefined, 64)),
        "tokenizer: tokenizer.json: post_processor names \"[CLX]\", which its special_tokens do not define"
    );
    let uneven = edited(&|j| {
        j["post_processor"]["special_tokens"]["[SEP]"]["ids"] = serde_json::json!([102, 103])
    });
    assert!(
        message(Tokenizer::from_tokenizer_json(&uneven, 64))
            .contains("different number of ids and tokens")
    );
    let mut syntax = json.to_string();
    syntax.insert(
        syntax
            .find("\"WordPiece\", \"prefix")
            .or(syntax.find("\"prefix\":\"##\""))
            .unwrap()
            + 3,
        '\u{1}',
    );
    assert!(
        message(Tokenizer::from_tokenizer_json(syntax.as_bytes(), 64))
            .contains("could not be read")
    );
    // An id no token has, from the post-processor: an error at encode, not a gather past the embeddings.
    let foreign = edited(&|j| {
        j["post_processor"]["special_tokens"]["[CLS]"]["ids"] = serde_json::json!([5000])
    });
    let tokenizer = Tokenizer::from_tokenizer_json(&foreign, 64).unwrap();
    assert!(
        message(tokenizer.encode("hello")).contains("the id 5000, which is not in its vocabulary")
    );
}

#[test]
fn tokenizer_errors() {
    assert!(
        message(Tokenizer::from_tokenizer_json(b"{not json", 512))
            .contains("tokenizer.json could not be read")
    );
    assert!(
        message(Tokenizer::from_vocab(b"a\nb\n[UNK]\n", None, 512))
            .contains("vocab.txt has no [CLS] token")
    );
    assert!(
        message(Tokenizer::from_vocab(
            b"[CLS]\n[SEP]\n[UNK]\n",
            Some("{oops"),
            512
        ))
        .contains("tokenizer_config.json")
    );
    // A tokenizer bigger than the model's vocabulary belongs to another model.
    let minilm_tokenizer =
        TokenizerFiles::Json(std::fs::read(common::minilm_dir().join("tokenizer.json")).unwrap());
    let checkpoint =
        Checkpoint::from_safetensors(std::fs::read(tiny_dir().join("model.safetensors")).unwrap())
            .unwrap();
    let err = message(ModelFiles::new(
        &tiny_config(),
        minilm_tokenizer,
        checkpoint,
    ));
    assert!(
        err.contains("the tokenizer has 30522 tokens but config.json's vocab_size is 1000"),
        "{err}"
    );
    // A repeated line in vocab.txt: as many tokens as the vocabulary, but the last id is past it.
    let mut vocab = std::fs::read(tiny_dir().join("vocab.txt")).unwrap();
    vocab.extend_from_slice(b"the\n");
    let checkpoint =
        Checkpoint::from_safetensors(std::fs::read(tiny_dir().join("model.safetensors")).unwrap())
            .unwrap();
    let tokenizer = TokenizerFiles::Vocab {
        vocab,
        config: None,
    };
    let err = message(ModelFiles::new(&tiny_config(), tokenizer, checkpoint));
    assert!(
        err.contains(
            "the tokenizer gives \"the\" the id 1000, past config.json's vocab_size of 1000"
        ),
        "{err}"
    );
}

#[test]
fn pipeline_input_errors_leave_the_pipeline_usable() {
    let fill = load_mlm(std::fs::read(tiny_dir().join("model.safetensors")).unwrap()).unwrap();
    let run = |text: &str, k| common::block_on(fill.predict(text, k));
    assert_eq!(
        message(run("no mask here", 5)),
        "input: the text has no [MASK] token"
    );
    assert_eq!(message(run("   ", 5)), "input: the text is empty");
    assert_eq!(
        message(run("a [MASK]", 0)),
        "input: top_k must be at least 1"
    );
    let huge = "word ".repeat(2_000_001);
    assert_eq!(
        message(run(&huge, 5)),
        "input: a text of 10000005 bytes is more than the 10000000 a call takes (the model reads only its first 64 tokens): cut it first"
    );
    let long = format!("{} [MASK]", "the ".repeat(100));
    assert!(message(run(&long, 5)).contains("truncated"));
    let ok = run("the [MASK] of", 3).unwrap();
    assert_eq!(ok.masks.len(), 1);
    assert_eq!(ok.masks[0].len(), 3);
    assert!(ok.masks[0][0].score >= ok.masks[0][1].score);
    // topK past the vocabulary is the whole vocabulary; past 50,000 predictions in all, an error.
    let all = run("the [MASK] of", usize::MAX).unwrap();
    assert_eq!(all.masks[0].len(), 1000);
    let sum: f32 = all.masks[0].iter().map(|p| p.score).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
    let many = "[MASK] ".repeat(60);
    assert_eq!(
        message(run(&many, 1000)),
        "input: 60 masks × topK 1000 is more than 50000 predictions; ask for fewer"
    );
    assert_eq!(run(&many, 800).unwrap().masks.len(), 60);

    let embedder = Embedder::load(common::minilm(), Backend::Cpu.device().unwrap()).unwrap();
    let texts = vec!["fine".to_string(), String::new()];
    assert_eq!(
        message(common::block_on(embedder.embed(
            &texts,
            Pooling::Mean,
            true
        ))),
        "input: the text is empty"
    );
    assert_eq!(
        common::block_on(embedder.embed(&texts[..1], Pooling::Mean, true)).unwrap()[0].len(),
        384
    );
}

#[test]
fn fill_mask_needs_a_masked_lm_checkpoint() {
    let err = message(FillMask::load(
        common::minilm(),
        Backend::Cpu.device().unwrap(),
    ));
    assert!(
        err.contains("cls.predictions") && err.contains("needs a masked-LM checkpoint"),
        "{err}"
    );
}

#[test]
fn option_values_are_checked() {
    assert!(message("gpu".parse::<Backend>()).contains("backend must be \"cpu\" or \"wgpu\""));
    assert!(message("max".parse::<Pooling>()).contains("pooling must be \"mean\" or \"cls\""));
}

#[test]
fn missing_files_are_named() {
    let err = message(ModelFiles::from_dir(std::path::Path::new(
        "/nonexistent/model",
    )));
    assert_eq!(err, "/nonexistent/model: config.json is missing");
    let dir = std::env::temp_dir().join(format!("webbert-no-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(tiny_dir().join("vocab.txt"), dir.join("vocab.txt")).unwrap();
    let err = message(ModelFiles::from_dir(&dir));
    assert!(
        err.ends_with("neither model.safetensors nor model.safetensors.index.json is present"),
        "{err}"
    );
    let err = message(ModelFiles::from_dir_as(&tiny_dir(), WeightsDtype::Fp16));
    assert!(
        err.ends_with(
            "model.fp16.safetensors is missing (`webbert quantize --dtype fp16` writes it)"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every parser a user can feed, on mutated valid files and arbitrary input, and arbitrary text through
/// tokenize → fill-mask / embed: a value or an error, never a panic. `PROPTEST_CASES` sets the cases per
/// target (scripts/fuzz.sh runs many more than CI's default).
mod fuzz {
    use std::io::Cursor;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use serde_json::Value;
    use webbert::io::jsonl::JsonLines;

    use super::*;

    /// `default` cases, or `share` of `PROPTEST_CASES` where it is set.
    fn budget(default: u32, share: f64) -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse::<f64>().ok())
            .map_or(default, |c| (c * share).max(1.0) as u32);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Byte edits and a cut: `(where, new byte)`s, then where the file ends.
    fn mutations() -> impl Strategy<Value = (Vec<(Index, u8)>, Option<Index>)> {
        (
            prop::collection::vec((any::<Index>(), any::<u8>()), 1..8),
            prop::option::weighted(0.2, any::<Index>()),
        )
    }

    /// `bytes` with the edits applied within its first `span` bytes (where the structure is).
    fn mutate(
        mut bytes: Vec<u8>,
        span: usize,
        (edits, cut): &(Vec<(Index, u8)>, Option<Index>),
    ) -> Vec<u8> {
        let span = span.min(bytes.len());
        for (at, byte) in edits {
            bytes[at.index(span)] = *byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes
    }

    fn tiny_weights() -> Vec<u8> {
        std::fs::read(tiny_dir().join("model.safetensors")).unwrap()
    }

    /// A JSON value of any kind, sizes at the edges included.
    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (0u64..4096).prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,8}".prop_map(Value::from),
            Just(Value::Array(vec![])),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            // Words, punctuation, accents, CJK, controls and specials: what BERT's rules treat specially;
            // pieces that join into words WordPiece splits, or cannot.
            prop::collection::vec(
                prop::sample::select(vec![
                    "the", " ", "\t", "\n", "[MASK]", "[SEP]", "[CLS]", "[UNK]", "é", "Ä", "ß",
                    "İ", "中", "文", "\u{0}", "\u{fffd}", "\u{200b}", "\u{301}", "...", "-", "'",
                    "🙂", "Straße", "naïve", "x", "##", "[MAS", "K]", "\u{a0}", "\r\n", "token",
                    "izers", "qzv", "aaaaaaaa",
                ]),
                0..40,
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    proptest! {
        #![proptest_config(budget(64, 1.0))]

        #[test]
        fn safetensors_files(m in mutations()) {
            let bytes = tiny_weights();
            let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let _ = load_mlm(mutate(bytes, header + 64, &m));
        }

        #[test]
        fn safetensors_index(m in mutations()) {
            let dir = common::fixtures().join("tiny-mlm-bf16-sharded");
            let index = std::fs::read(dir.join("model.safetensors.index.json")).unwrap();
            let index = String::from_utf8_lossy(&mutate(index, usize::MAX, &m)).into_owned();
            if let Ok(names) = Checkpoint::shard_names(&index) {
                let shards = names
                    .iter()
                    .filter_map(|n| Some((n.clone(), std::fs::read(dir.join(n)).ok()?)))
                    .collect();
                let _ = Checkpoint::from_shards(&index, shards);
            }
        }

        #[test]
        fn config_json(edits in prop::collection::vec((any::<Index>(), json_value()), 1..4)) {
            let mut config: Value = serde_json::from_str(&tiny_config()).unwrap();
            let keys: Vec<String> = config.as_object().unwrap().keys().cloned().collect();
            for (key, value) in edits {
                config[key.get(&keys).as_str()] = value;
            }
            if let Ok(checkpoint) = Checkpoint::from_safetensors(tiny_weights())
                && let Ok(files) = ModelFiles::new(&config.to_string(), tiny_tokenizer(), checkpoint)
            {
                let _ = FillMask::load(files, Backend::Cpu.device().unwrap());
            }
        }

        /// ModernBERT's options edited (window, layer types, rotary bases, biases, pooling, sizes): an error,
        /// or a classifier that classifies.
        #[test]
        fn modernbert_config_json(edits in prop::collection::vec((any::<Index>(), json_value()), 1..4)) {
            let dir = common::fixtures().join("tiny-modernbert-cls");
            let mut config: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
            let keys = [
                "local_attention", "global_attn_every_n_layers", "layer_types", "rope_parameters",
                "global_rope_theta", "norm_bias", "attention_bias", "mlp_bias", "classifier_bias",
                "classifier_pooling", "classifier_activation", "hidden_activation", "norm_eps",
                "num_hidden_layers", "intermediate_size", "max_position_embeddings",
            ];
            for (key, value) in edits {
                config[*key.get(&keys)] = value;
            }
            let files = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
                "config.json" => Ok(Some(config.to_string().into_bytes())),
                name => webbert::io::source::read_optional(&dir.join(name)),
            });
            if let Ok(files) = files
                && let Ok(classifier) = Classifier::load(files, Backend::Cpu.device().unwrap())
            {
                let text = "A text of a few words, longer than the window.";
                let labels = common::block_on(classifier.classify(&[(text, None)], 1)).unwrap();
                prop_assert_eq!(labels[0].len(), 1);
            }
        }

        #[test]
        fn tokenizer_json(m in mutations(), text in text()) {
            let json = std::fs::read(common::fixtures().join("tiny-mlm-bf16-sharded/tokenizer.json")).unwrap();
            if let Ok(tokenizer) = Tokenizer::from_tokenizer_json(&mutate(json, usize::MAX, &m), 64) {
                let _ = tokenizer.encode(&text);
            }
        }

        #[test]
        fn vocab_txt(lines in prop::collection::vec(text(), 0..50), text in text()) {
            let vocab = lines.join("\n");
            if let Ok(tokenizer) = Tokenizer::from_vocab(vocab.as_bytes(), None, 16) {
                let _ = tokenizer.encode(&text);
            }
        }

        #[test]
        fn jsonl(bytes in prop::collection::vec(any::<u8>(), 0..200), lines in prop::collection::vec(text(), 0..5)) {
            let quoted: Vec<String> = lines.iter().map(|l| Value::from(l.as_str()).to_string()).collect();
            let read = JsonLines::new(Cursor::new(quoted.join("\n\n")), "test").collect::<webbert::Result<Vec<_>>>();
            prop_assert_eq!(read.unwrap(), lines);
            let _ = JsonLines::new(Cursor::new(bytes), "test").count();
        }
    }

    proptest! {
        #![proptest_config(budget(32, 0.1))]

        /// Any text: the fast tokenizer path gives what `tokenizers` gives, fill-mask and embed give a
        /// result or an input error.
        #[test]
        fn any_text_through_the_pipelines(text in text(), at in any::<Index>()) {
            let files = || ModelFiles::from_dir(&tiny_dir()).unwrap();
            let tokenizer = files().tokenizer;
            prop_assert!(tokenizer.has_fast_path());
            let fast = tokenizer.encode(&text);
            let reference = tokenizer.clone().without_fast_path().encode(&text);
            prop_assert_eq!(fast.ok(), reference.ok());
            let mut masked = text.clone();
            let cut = masked.char_indices().map(|(i, _)| i).chain([masked.len()]).nth(at.index(text.chars().count() + 1)).unwrap();
            masked.insert_str(cut, "[MASK]");
            let fill = FillMask::load(files(), Backend::Cpu.device().unwrap()).unwrap();
            match common::block_on(fill.predict(&masked, 3)) {
                Ok(out) => prop_assert!(!out.masks.is_empty()),
                Err(e) => prop_assert!(matches!(e, Error::Input(_)), "{e}"),
            }
            let embedder = Embedder::load(files(), Backend::Cpu.device().unwrap()).unwrap();
            match common::block_on(embedder.embed(&[text], Pooling::Mean, true)) {
                Ok(rows) => prop_assert!(rows[0].iter().all(|v| v.is_finite())),
                Err(e) => prop_assert!(matches!(e, Error::Input(_)), "{e}"),
            }
        }

        /// Any text through the task heads (byte-level BPE where offsets are hardest): a pair classified,
        /// entities and answers whose character offsets lie in the text and give their words, or an input
        /// error.
        #[test]
        fn any_text_through_the_task_heads(text in text(), other in text()) {
            let files = |name: &str| ModelFiles::from_dir(&common::fixtures().join(name)).unwrap();
            let device = || Backend::Cpu.device().unwrap();
            let chars: Vec<char> = text.chars().collect();
            let classifier = webbert::Classifier::load(files("tiny-roberta-cls"), device()).unwrap();
            match common::block_on(classifier.classify(&[(&text, Some(&other))], 2)) {
                Ok(labels) => prop_assert_eq!(labels[0].len(), 2),
                Err(e) => prop_assert!(matches!(e, Error::Input(_)), "{e}"),
            }
            let tagger = webbert::TokenClassifier::load(files("tiny-roberta-ner"), device()).unwrap();
            for aggregation in [webbert::Aggregation::None, webbert::Aggregation::Simple] {
                match common::block_on(tagger.entities(&text, aggregation)) {
                    Ok(entities) => {
                        for e in entities {
                            prop_assert!(e.start <= e.end && e.end <= chars.len(), "{e:?}");
                        }
                    }
                    Err(e) => prop_assert!(matches!(e, Error::Input(_)), "{e}"),
                }
            }
            let reader = webbert::QuestionAnswerer::load(files("tiny-roberta-qa"), device()).unwrap();
            let options = webbert::QaOptions { top_k: 3, ..webbert::QaOptions::new(reader.tokenizer.max_len()) };
            match common::block_on(reader.answer(&other, &text, &options)) {
                Ok(answers) => {
                    for a in answers {
                        prop_assert!(a.start <= a.end && a.end <= chars.len(), "{a:?}");
                        prop_assert_eq!(&a.answer, &chars[a.start..a.end].iter().collect::<String>());
                    }
                }
                Err(e) => prop_assert!(matches!(e, Error::Input(_)), "{e}"),
            }
        }
    }
}

/// A checkpoint without a classifier, or one whose classifier has other labels than config.json names.
#[test]
fn classifier_needs_a_classification_checkpoint() {
    let err = message(Classifier::load(
        ModelFiles::from_dir(&common::fixtures().join("tiny-mlm")).unwrap(),
        Backend::Cpu.device().unwrap(),
    ));
    assert!(
        err.contains("tensor `bert.pooler.dense.weight` is missing")
            && err.contains("text classification needs a …ForSequenceClassification checkpoint"),
        "{err}"
    );
    let dir = common::fixtures().join("tiny-bert-cls");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["id2label"] = serde_json::json!({"0": "no", "1": "yes"});
    let files = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
        "config.json" => Ok(Some(config.to_string().into_bytes())),
        name => webbert::io::source::read_optional(&dir.join(name)),
    })
    .unwrap();
    let err = message(Classifier::load(files, Backend::Cpu.device().unwrap()));
    assert!(
        err.contains("tensor `classifier.weight` has shape [3, 32], expected [2, 32]"),
        "{err}"
    );
    let err = message(BertConfig::from_hf_json(
        r#"{"vocab_size": 10, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4, "id2label": {"0": "a", "2": "c"}}"#,
    ));
    assert!(err.contains("`id2label` must map the ids 0, 1, …"), "{err}");
}

/// A ModernBERT classifier is no masked LM: refused by the tensor it lacks.
#[test]
fn modernbert_classifier_is_no_masked_lm() {
    let files = || ModelFiles::from_dir(&common::fixtures().join("tiny-modernbert-cls")).unwrap();
    let device = || Backend::Cpu.device().unwrap();
    let err = message(FillMask::load(files(), device()));
    assert!(
        err.contains("tensor `decoder.bias` is missing")
            && err.contains("fill-mask needs a masked-LM checkpoint"),
        "{err}"
    );
}

/// sentence-transformers files that ask for what webbert does not do, or point outside the model.
#[test]
fn sentence_transformers_modules_errors() {
    let dir = tiny_dir();
    let load = |modules: &str, pooling: &str| {
        let error = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
            "modules.json" => Ok(Some(modules.as_bytes().to_vec())),
            "1_Pooling/config.json" => Ok(Some(pooling.as_bytes().to_vec())),
            name => webbert::io::source::read_optional(&dir.join(name)),
        });
        message(error)
    };
    let pooling_module =
        r#"[{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
    let err = load(pooling_module, r#"{"pooling_mode_max_tokens": true}"#);
    assert!(
        err.contains("1_Pooling/config.json asks for pooling [\"max_tokens\"]"),
        "{err}"
    );
    let err = load(
        r#"[{"path": "../../etc", "type": "sentence_transformers.models.Pooling"}]"#,
        "{}",
    );
    assert!(err.contains("unsafe Pooling path \"../../etc\""), "{err}");
    let err = load("{not json", "{}");
    assert!(
        err.starts_with("config error: modules.json:") || err.contains("modules.json:"),
        "{err}"
    );
}

/// A question that leaves a chunk too little room for the context beside the stride (the fuzzer found
/// that `tokenizers` panics there) is an input error, and the pipeline stays usable.
#[test]
fn a_question_too_long_for_its_chunks_is_an_input_error() {
    let dir = common::fixtures().join("tiny-distilbert-qa");
    let reader = webbert::QuestionAnswerer::load(
        ModelFiles::from_dir(&dir).unwrap(),
        Backend::Cpu.device().unwrap(),
    )
    .unwrap();
    let options = webbert::QaOptions::new(reader.tokenizer.max_len());
    let question = "the ".repeat(30);
    let err = common::block_on(reader.answer(&question, "John went home.", &options)).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    assert!(
        err.to_string()
            .contains("the question takes 30 of the 64 tokens a chunk holds, leaving 31"),
        "{err}"
    );
    let answers =
        common::block_on(reader.answer("Who went home?", "John went home.", &options)).unwrap();
    assert!(!answers.is_empty());
    // A stride that moves each chunk on by a token or two (a chunk per token or two) is refused too:
    // "who went home?" leaves 64 - 4 - 3 = 57 context tokens a chunk.
    let creeping = webbert::QaOptions {
        doc_stride: 55,
        ..options
    };
    let err = common::block_on(reader.answer("who went home?", "John went home.", &creeping))
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "docStride 55 moves each chunk on by 2 of its 57 context tokens, so every token would be \
             read about 28 times: use a docStride of at most 53"
        ),
        "{err}"
    );
    let fair = webbert::QaOptions {
        doc_stride: 53,
        ..options
    };
    assert!(common::block_on(reader.answer("who went home?", "John went home.", &fair)).is_ok());
}
