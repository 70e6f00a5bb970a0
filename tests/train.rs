//! Masked-LM training: the loss and gradients against PyTorch, and `webbert train-mlm` end to end
//! (learning, frozen word embeddings, deterministic resume, the shipped delta).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use common::{Golden, fixtures, max_abs_diff};
use safetensors::SafeTensors;
use serde_json::Value;
use webbert::ModelFiles;
use webbert::io::weights::load_bert_for_masked_lm;
use webbert::train::masking::MaskedSequence;
use webbert::train::{mlm_loss, prepare};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn one_step_loss_and_gradients_match_pytorch() {
    let fixture: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("tiny-mlm_grad.json")).unwrap())
            .unwrap();
    let golden = Golden::open("tiny-mlm_grad.safetensors");
    let device = Device::flex().autodiff();
    let files = ModelFiles::from_dir(&fixtures().join("tiny-mlm")).unwrap();
    let model = load_bert_for_masked_lm(&files.checkpoint, &files.config, &device).unwrap();

    let ints = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let rows = fixture["input_ids"].as_array().unwrap();
    let masked: Vec<MaskedSequence> = (0..rows.len())
        .map(|r| {
            let len = ints(&fixture["attention_mask"][r]).iter().sum::<i64>() as usize;
            let ids = ints(&rows[r]);
            let labels = ints(&fixture["labels"][r]);
            MaskedSequence {
                input_ids: ids[..len].iter().map(|&i| i as u32).collect(),
                labels: labels[..len]
                    .iter()
                    .map(|&l| (l >= 0).then_some(l as u32))
                    .collect(),
            }
        })
        .collect();
    let (batch, targets) = prepare(&masked, files.config.pad_token_id as u32, &device);
    let (loss, _) = mlm_loss(&model, &batch, &targets);
    let grads = loss.backward();

    let loss = values(loss.inner())[0];
    let expected = fixture["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss - expected).abs() < 1e-4,
        "loss {loss} vs PyTorch {expected}"
    );
    println!("loss {loss} vs PyTorch {expected}");

    let grad = |p: &Param<Tensor<1>>| values(p.val().grad(&grads).expect("has a gradient"));
    let grad2 = |p: &Param<Tensor<2>>| values(p.val().grad(&grads).expect("has a gradient"));
    // burn's Linear weight is [in, out]; PyTorch's [out, in].
    let grad_linear =
        |p: &Param<Tensor<2>>| values(p.val().grad(&grads).expect("has a gradient").transpose());
    let (bert, cls) = (&model.bert, &model.cls);
    // The fused projection holds query, key and value side by side: `part` 0, 1, 2 of its outputs.
    let qkv = &bert.layers[0].attention.qkv;
    let hidden = qkv.weight.dims()[0];
    let qkv_weight = |part: usize| {
        let grad = qkv.weight.val().grad(&grads).expect("has a gradient");
        values(grad.narrow(1, part * hidden, hidden).transpose())
    };
    let qkv_bias = |part: usize| {
        let grad = qkv
            .bias
            .as_ref()
            .unwrap()
            .val()
            .grad(&grads)
            .expect("has a gradient");
        values(grad.narrow(0, part * hidden, hidden))
    };
    let ours: Vec<(&str, Vec<f32>)> = vec![
        (
            "bert.embeddings.word_embeddings.weight",
            grad2(&bert.embeddings.word_embeddings.weight),
        ),
        (
            "bert.embeddings.position_embeddings.weight",
            grad2(&bert.embeddings.position_embeddings.as_ref().unwrap().weight),
        ),
        (
            "bert.embeddings.LayerNorm.weight",
            grad(&bert.embeddings.layer_norm.gamma),
        ),
        (
            "bert.encoder.layer.0.attention.self.query.weight",
            qkv_weight(0),
        ),
        (
            "bert.encoder.layer.0.attention.self.value.bias",
            qkv_bias(2),
        ),
        (
            "bert.encoder.layer.1.intermediate.dense.bias",
            grad(bert.layers[1].intermediate.bias.as_ref().unwrap()),
        ),
        (
            "bert.encoder.layer.1.output.dense.weight",
            grad_linear(&bert.layers[1].output.weight),
        ),
        (
            "bert.encoder.layer.1.output.LayerNorm.weight",
            grad(&bert.layers[1].layer_norm.gamma),
        ),
        (
            "cls.predictions.transform.dense.weight",
            grad_linear(&cls.dense.weight),
        ),
        (
            "cls.predictions.transform.LayerNorm.bias",
            grad(cls.layer_norm.beta.as_ref().unwrap()),
        ),
        ("cls.predictions.bias", grad(cls.bias.as_ref().unwrap())),
    ];
    assert_eq!(ours.len(), fixture["tensors"].as_array().unwrap().len());
    for (name, ours) in ours {
        let (_, reference) = golden.get(name);
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 1e-6,
            "{name}: the reference gradient is zero, the check would be void"
        );
        let diff = max_abs_diff(&ours, reference);
        println!("{name}: max abs diff {diff:.1e} (max |grad| {scale:.1e})");
        assert!(
            diff <= 1e-4,
            "{name}: gradient differs from PyTorch by {diff} (max |grad| {scale})"
        );
    }
}

fn webbert(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_webbert"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "webbert {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor(name)
        .unwrap()
        .data()
        .to_vec()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webbert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn train_mlm_learns_resumes_exactly_and_ships_a_delta() {
    let dir = scratch("train");
    let corpus = dir.join("corpus.txt");
    let text =
        "the man is playing the guitar\nthe dog is over the street\na man and a dog\n".repeat(4);
    std::fs::write(&corpus, text).unwrap();
    let base = fixtures().join("tiny-mlm");
    let (corpus, base) = (corpus.to_str().unwrap(), base.to_str().unwrap());
    let before = webbert(&["eval-mlm", "--model", base, "--text", corpus]);

    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let out = out.to_str().unwrap().to_string();
        let mut args = vec![
            "train-mlm",
            "--base",
            base,
            "--corpus",
            corpus,
            "--heldout",
            corpus,
            "--out",
            &out,
            "--steps",
            steps,
            "--batch-size",
            "4",
            "--max-len",
            "32",
            "--lr",
            "3e-3",
            "--warmup-steps",
            "2",
            "--checkpoint-every",
            "50",
        ];
        args.extend_from_slice(extra);
        webbert(&args)
    };
    // A run that could never checkpoint, or never end its warm-up, is refused in one line.
    for (flag, value) in [("--checkpoint-every", "0"), ("--warmup-steps", "100")] {
        let out = Command::new(env!("CARGO_BIN_EXE_webbert"))
            .args([
                "train-mlm",
                "--base",
                base,
                "--corpus",
                corpus,
                "--steps",
                "100",
                flag,
                value,
            ])
            .args([
                "--max-len",
                "32",
                "--out",
                dir.join("refused").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(
            stderr.contains("checkpoint-every must be at least 1 and warmup-steps below steps"),
            "{stderr}"
        );
    }
    let whole = dir.join("whole");
    let after = train(&whole, "100", &[]);
    for test in ["masked_tokens", "content_words"] {
        assert!(
            after[test]["top5"].as_f64().unwrap() > before[test]["top5"].as_f64().unwrap() + 0.3,
            "training did not learn the corpus ({test}): {before} → {after}"
        );
    }
    // Of the three lines, "a man and a dog" is too short and the tiny vocabulary splits "dog" and
    // "street" into pieces: only "man" in "the man is playing the guitar" is a content word to mask.
    assert_eq!(after["content_words"]["sentences"], 4);

    // The same run cut at its checkpoint and resumed gives the same weights, bit for bit.
    let split = dir.join("split");
    train(&split, "100", &["--until", "50"]);
    train(&split, "100", &["--resume"]);
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        model(&whole) == model(&split),
        "a resumed run differs from an uninterrupted one"
    );

    let word = "bert.embeddings.word_embeddings.weight";
    assert_eq!(
        tensor_bytes(&whole.join("model.safetensors"), word),
        tensor_bytes(&fixtures().join("tiny-mlm/model.safetensors"), word),
        "the word embeddings must stay frozen"
    );
    assert_ne!(
        tensor_bytes(
            &whole.join("model.safetensors"),
            "bert.encoder.layer.0.attention.self.query.weight"
        ),
        tensor_bytes(
            &fixtures().join("tiny-mlm/model.safetensors"),
            "bert.encoder.layer.0.attention.self.query.weight"
        ),
        "the encoder must train"
    );

    let ship = |model: &Path, name: &str| {
        let out = dir.join(name);
        webbert(&[
            "ship-mlm",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    };
    let shipped = ship(&whole, "shipped");
    let delta = std::fs::read(shipped.join(webbert::train::DELTA_SHARD)).unwrap();
    let delta = SafeTensors::deserialize(&delta).unwrap();
    assert!(
        delta.tensor(word).is_err(),
        "the delta must leave out the word embeddings"
    );
    let query = delta
        .tensor("bert.encoder.layer.0.attention.self.query.weight")
        .unwrap();
    assert_eq!(query.dtype(), safetensors::Dtype::F16);
    let index: Value = serde_json::from_slice(
        &std::fs::read(shipped.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["weight_map"][word], webbert::train::BASE_SHARD);
    assert_eq!(
        index["weight_map"]["cls.predictions.bias"],
        webbert::train::DELTA_SHARD
    );

    // Trained word embeddings (tied decoder) move, and the shipped form is then the whole model in int8.
    let trained = dir.join("trained");
    train(&trained, "20", &["--train-word-embeddings"]);
    assert_ne!(
        tensor_bytes(&trained.join("model.safetensors"), word),
        tensor_bytes(&fixtures().join("tiny-mlm/model.safetensors"), word),
        "--train-word-embeddings left them frozen"
    );
    let shipped = ship(&trained, "shipped-trained");
    let q8 = std::fs::read(shipped.join("model.q8.safetensors")).unwrap();
    let q8 = SafeTensors::deserialize(&q8).unwrap();
    assert_eq!(q8.tensor(word).unwrap().dtype(), safetensors::Dtype::I8);
    assert!(!shipped.join(webbert::train::DELTA_SHARD).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
