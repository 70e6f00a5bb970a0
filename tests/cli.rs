//! The `webbert` binary: JSON lines out, one-line errors and non-zero exits for bad input.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn webbert(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_webbert"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr_line(out: &Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn tokenize_args_and_jsonl_from_stdin() {
    let model = common::minilm_dir();
    let model = model.to_str().unwrap();
    let out = webbert(
        &[
            "tokenize",
            "--model",
            model,
            "Paris is the [MASK] of France.",
            "--jsonl",
            "-",
        ],
        Some("\"ctrl\\u0001 tab\\t\\\"quoted\\\"\"\n\n\"東京\"\n"),
    );
    let out = lines(&out);
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[0]["ids"],
        serde_json::json!([101, 3000, 2003, 1996, 103, 1997, 2605, 1012, 102])
    );
    assert_eq!(out[0]["tokens"][4], "[MASK]");
    assert_eq!(out[0]["offsets"][1], serde_json::json!([0, 5]));
    assert_eq!(
        out[1]["tokens"],
        serde_json::json!(["[CLS]", "ct", "##rl", "tab", "\"", "quoted", "\"", "[SEP]"])
    );
    assert_eq!(
        out[2]["tokens"],
        serde_json::json!(["[CLS]", "東", "京", "[SEP]"])
    );
}

#[test]
fn fill_mask_and_embed() {
    let tiny = common::fixtures().join("tiny-mlm");
    let out = lines(&webbert(
        &[
            "fill-mask",
            "--model",
            tiny.to_str().unwrap(),
            "--top-k",
            "2",
            "the [MASK] dog [MASK] over the fox",
        ],
        None,
    ));
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("tiny-mlm_golden.json")).unwrap(),
    )
    .unwrap();
    let masks = out[0]["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 2);
    for (got, want) in masks.iter().zip(golden["fill_mask"][1].as_array().unwrap()) {
        assert_eq!(got.as_array().unwrap().len(), 2);
        assert_eq!(got[0]["token"], want[0]["token"]);
        assert_eq!(got[0]["token_id"], want[0]["token_id"]);
    }

    // The reference sentences from --jsonl after one argument: grouped by length inside, printed in order.
    let sentences: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("minilm_golden.json")).unwrap(),
    )
    .unwrap();
    let jsonl: String = sentences["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{s}\n"))
        .collect();
    let model = common::minilm_dir();
    let out = lines(&webbert(
        &[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "Hi",
            "--jsonl",
            "-",
        ],
        Some(&jsonl),
    ));
    let golden = common::Golden::open("minilm_golden.safetensors");
    let (shape, mean) = golden.get("embedding.mean");
    assert_eq!(out.len(), 1 + shape[0]);
    for (line, want) in out[1..].iter().zip(mean.chunks_exact(shape[1])) {
        let row: Vec<f32> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert!(common::cosine(&row, want) >= 0.99999);
    }
}

#[test]
fn bad_input_gives_one_line_and_nonzero_exit() {
    let tiny = common::fixtures().join("tiny-mlm");
    let tiny = tiny.to_str().unwrap();
    let err = stderr_line(&webbert(&["fill-mask", "--model", tiny, "no mask"], None));
    assert!(err.contains("no [MASK] token"), "{err}");
    let err = stderr_line(&webbert(
        &["tokenize", "--model", "/nonexistent", "x"],
        None,
    ));
    assert!(
        err.contains("/nonexistent: config.json is missing"),
        "{err}"
    );
    let err = stderr_line(&webbert(
        &["tokenize", "--model", tiny, "--jsonl", "-"],
        Some("\"ok\"\nnot json\n"),
    ));
    assert!(err.contains("line 2: expected a JSON string"), "{err}");
    let err = stderr_line(&webbert(&["tokenize", "--model", tiny], None));
    assert!(err.contains("no input text"), "{err}");
}

/// `classify` (texts and `--text-pair`, `--top-k`) and `rerank` against transformers' pipeline scores.
#[test]
fn classify_and_rerank() {
    let fixtures = common::fixtures();
    let golden = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(format!("{name}_golden.json"))).unwrap(),
        )
        .unwrap()
    };
    let model = fixtures.join("tiny-bert-cls");
    let want = golden("tiny-bert-cls");
    let single = &want["single"][0];
    let pair = &want["pairs"][0];
    let jsonl = format!("{}\n", single["text"]);
    let out = webbert(
        &[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--top-k",
            "3",
            "--jsonl",
            "-",
        ],
        Some(&jsonl),
    );
    let labels = &lines(&out)[0]["labels"];
    for (got, want) in labels
        .as_array()
        .unwrap()
        .iter()
        .zip(single["pipeline"].as_array().unwrap())
    {
        assert_eq!(got["label"], want["label"]);
        assert!((got["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs() < 1e-4);
    }
    let out = webbert(
        &[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--text-pair",
            pair["text_pair"].as_str().unwrap(),
            pair["text"].as_str().unwrap(),
        ],
        None,
    );
    let labels = &lines(&out)[0]["labels"];
    assert_eq!(labels.as_array().unwrap().len(), 1);
    assert_eq!(labels[0]["label"], pair["pipeline"][0]["label"]);

    let rerank = &golden("tiny-reranker")["rerank"];
    let mut args = vec![
        "rerank".to_string(),
        "--model".into(),
        fixtures.join("tiny-reranker").to_str().unwrap().into(),
        "--query".into(),
        rerank["query"].as_str().unwrap().into(),
    ];
    args.extend(
        rerank["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ranked = lines(&webbert(&args, None));
    let scores = rerank["scores"].as_array().unwrap();
    assert_eq!(ranked.len(), scores.len());
    let mut last = f64::INFINITY;
    for r in &ranked {
        let index = r["index"].as_u64().unwrap() as usize;
        let score = r["score"].as_f64().unwrap();
        assert!((score - scores[index].as_f64().unwrap()).abs() < 1e-4);
        assert!(score <= last, "best first");
        last = score;
        assert_eq!(r["text"], rerank["passages"][index]);
    }
    let err = stderr_line(&webbert(
        &[
            "classify",
            "--model",
            fixtures.join("tiny-mlm").to_str().unwrap(),
            "a text",
        ],
        None,
    ));
    assert!(err.contains("bert.pooler.dense.weight"), "{err}");
}

/// `ner` (simple aggregation by default) and `answer` against transformers' pipelines.
#[test]
fn ner_and_answer() {
    let fixtures = common::fixtures();
    let golden = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(format!("{name}_golden.json"))).unwrap(),
        )
        .unwrap()
    };
    let ner = &golden("tiny-bert-ner")["cases"][1];
    let model = fixtures.join("tiny-bert-ner");
    let out = lines(&webbert(
        &[
            "ner",
            "--model",
            model.to_str().unwrap(),
            ner["text"].as_str().unwrap(),
        ],
        None,
    ));
    let entities = out[0]["entities"].as_array().unwrap();
    let want = ner["simple"].as_array().unwrap();
    assert_eq!(entities.len(), want.len());
    for (got, want) in entities.iter().zip(want) {
        assert_eq!(got["entityGroup"], want["entity_group"]);
        assert_eq!((&got["start"], &got["end"]), (&want["start"], &want["end"]));
    }
    let qa = &golden("tiny-distilbert-qa")["cases"][0];
    let model = fixtures.join("tiny-distilbert-qa");
    let out = lines(&webbert(
        &[
            "answer",
            "--model",
            model.to_str().unwrap(),
            "--question",
            qa["question"].as_str().unwrap(),
            "--top-k",
            "3",
            qa["context"].as_str().unwrap(),
        ],
        None,
    ));
    let answers = out[0]["answers"].as_array().unwrap();
    for (got, want) in answers.iter().zip(qa["top3"].as_array().unwrap()) {
        assert_eq!(got["answer"], want["answer"]);
        assert!((got["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs() < 1e-5);
    }
    let err = stderr_line(&webbert(
        &[
            "answer",
            "--model",
            model.to_str().unwrap(),
            "--question",
            "",
            "context",
        ],
        None,
    ));
    assert!(
        err.contains("the question and the context must not be empty"),
        "{err}"
    );
}
