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
            "--dtype",
            "fp32",
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

/// The fixture `{name}_golden.json`.
fn golden(name: &str) -> Value {
    let path = common::fixtures().join(format!("{name}_golden.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_dir(name: &str) -> String {
    common::fixtures().join(name).to_str().unwrap().to_string()
}

fn close(a: &Value, b: &Value, tolerance: f64) -> bool {
    (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < tolerance
}

/// `classify` (arguments with `--pair`, `--jsonl` lines of strings and pairs, `--top-k`) and `rerank` against
/// transformers' pipeline scores.
#[test]
fn classify_and_rerank() {
    let want = golden("tiny-bert-cls");
    let (single, pair) = (&want["single"][0], &want["pairs"][0]);
    let pair_line = serde_json::json!({"text": pair["text"], "text_pair": pair["text_pair"]});
    let jsonl = format!("{}\n{pair_line}\n", single["text"]);
    let model = fixture_dir("tiny-bert-cls");
    let out = lines(&webbert(
        &[
            "classify", "--model", &model, "--top-k", "3", "--jsonl", "-",
        ],
        Some(&jsonl),
    ));
    assert_eq!(out.len(), 2);
    for (labels, case) in out.iter().zip([single, pair]) {
        let labels = labels["labels"].as_array().unwrap();
        assert_eq!(labels.len(), 3);
        for (got, want) in labels.iter().zip(case["pipeline"].as_array().unwrap()) {
            assert_eq!(got["label"], want["label"]);
            assert!(close(&got["score"], &want["score"], 1e-4));
        }
    }
    let (text, text_pair) = (
        pair["text"].as_str().unwrap(),
        pair["text_pair"].as_str().unwrap(),
    );
    let out = lines(&webbert(
        &["classify", "--model", &model, "--pair", text_pair, text],
        None,
    ));
    let labels = out[0]["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0]["label"], pair["pipeline"][0]["label"]);

    let rerank = &golden("tiny-reranker")["rerank"];
    let passages: Vec<&str> = rerank["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let model = fixture_dir("tiny-reranker");
    let query = rerank["query"].as_str().unwrap();
    let mut args = vec!["rerank", "--model", &model, "--query", query];
    args.extend(&passages);
    let ranked = lines(&webbert(&args, None));
    assert_eq!(ranked.len(), passages.len());
    let mut last = f64::INFINITY;
    for r in &ranked {
        let index = r["index"].as_u64().unwrap() as usize;
        assert!(close(&r["score"], &rerank["scores"][index], 1e-4));
        assert!(r["score"].as_f64().unwrap() <= last, "best first");
        last = r["score"].as_f64().unwrap();
        assert_eq!(r["text"], passages[index]);
    }
    let err = stderr_line(&webbert(
        &["classify", "--model", &fixture_dir("tiny-mlm"), "a text"],
        None,
    ));
    assert!(err.contains("bert.pooler.dense.weight"), "{err}");
}

/// `ner` (`entity` holding the token's label, or the run's type with `--aggregation simple`) and `qa`
/// (arguments, or `{"question", "context"}` lines) against transformers' pipelines.
#[test]
fn ner_and_qa() {
    let ner = &golden("tiny-bert-ner")["cases"][1];
    let model = fixture_dir("tiny-bert-ner");
    let text = ner["text"].as_str().unwrap();
    for (aggregation, label) in [("none", "entity"), ("simple", "entity_group")] {
        let out = lines(&webbert(
            &["ner", "--model", &model, "--aggregation", aggregation, text],
            None,
        ));
        let entities = out[0]["entities"].as_array().unwrap();
        let want = ner[aggregation].as_array().unwrap();
        assert_eq!(entities.len(), want.len());
        for (got, want) in entities.iter().zip(want) {
            assert_eq!(got["entity"], want[label]);
            assert_eq!(got["word"], want["word"]);
            assert_eq!((&got["start"], &got["end"]), (&want["start"], &want["end"]));
            assert!(close(&got["score"], &want["score"], 1e-4));
        }
    }

    let qa = &golden("tiny-distilbert-qa")["cases"][0];
    let model = fixture_dir("tiny-distilbert-qa");
    let (question, context) = (
        qa["question"].as_str().unwrap(),
        qa["context"].as_str().unwrap(),
    );
    let out = lines(&webbert(
        &[
            "qa",
            "--model",
            &model,
            "--question",
            question,
            "--top-k",
            "3",
            context,
        ],
        None,
    ));
    let answers = out[0]["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3);
    for (got, want) in answers.iter().zip(qa["top3"].as_array().unwrap()) {
        assert_eq!(got["answer"], want["answer"]);
        assert!(close(&got["score"], &want["score"], 1e-5));
    }
    let line = serde_json::json!({"question": question, "context": context});
    let out = lines(&webbert(
        &["qa", "--model", &model, "--jsonl", "-"],
        Some(&format!("{line}\n")),
    ));
    assert_eq!(out[0]["answer"], qa["top1"]["answer"]);
    assert_eq!(out[0]["start"], qa["top1"]["start"]);
    assert!(close(&out[0]["score"], &qa["top1"]["score"], 1e-5));

    let err = stderr_line(&webbert(
        &["qa", "--model", &model, "--question", "", "context"],
        None,
    ));
    assert!(
        err.contains("the question and the context must not be empty"),
        "{err}"
    );
    let err = stderr_line(&webbert(&["qa", "--model", &model, "context"], None));
    assert!(err.contains("a context needs --question"), "{err}");
    let err = stderr_line(&webbert(
        &["qa", "--model", &model, "--jsonl", "-"],
        Some("\"just a string\"\n"),
    ));
    assert!(
        err.contains(r#"line 1: expected {"question", "context"}"#),
        "{err}"
    );
}
