//! The burn model against PyTorch's outputs (tests/fixtures, from scripts/reference.py), on every backend.
//! Targets: max abs diff ≤ 1e-4 on hidden states, logits and probabilities; cosine ≥ 0.99999 on embeddings.

mod common;

use common::{BACKENDS, Golden, block_on, cosine, max_abs_diff};
use serde_json::Value;
use webbert::model::Batch;
use webbert::{Backend, Embedder, FillMask, ModelFiles, Pooling};

const TOLERANCE: f32 = 1e-4;

fn sentences() -> Vec<String> {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("minilm_golden.json")).unwrap(),
    )
    .unwrap();
    json["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn read(t: burn::tensor::Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn minilm_hidden_states(backend: Backend) {
    let golden = Golden::open("minilm_golden.safetensors");
    let embedder = Embedder::load(common::minilm(), backend.device().unwrap()).unwrap();
    for (i, text) in sentences().iter().enumerate() {
        let encoding = embedder.tokenizer.encode(text).unwrap();
        let batch = Batch::new(&[encoding], 0, &embedder.device);
        let hidden = read(embedder.model.forward(&batch));
        let (shape, expected) = golden.get(&format!("hidden.{i}"));
        assert_eq!(hidden.len(), shape.iter().product::<usize>());
        let diff = max_abs_diff(&hidden, expected);
        println!("{backend:?} hidden.{i}: max abs diff {diff:.2e}");
        assert!(
            diff <= TOLERANCE,
            "{backend:?} sentence {i}: max abs diff {diff}"
        );
    }
}

#[test]
fn minilm_hidden_states_cpu() {
    minilm_hidden_states(Backend::Cpu);
}

#[test]
fn minilm_hidden_states_wgpu() {
    minilm_hidden_states(Backend::Wgpu);
}

#[test]
fn minilm_embeddings_batched_with_padding() {
    let golden = Golden::open("minilm_golden.safetensors");
    let texts = sentences();
    for backend in BACKENDS {
        let embedder = Embedder::load(common::minilm(), backend.device().unwrap()).unwrap();
        for (pooling, normalize, key) in [
            (Pooling::Mean, true, "embedding.mean"),
            (Pooling::Cls, true, "embedding.cls"),
            (Pooling::Mean, false, "embedding.mean_raw"),
        ] {
            let rows = block_on(embedder.embed(&texts, pooling, normalize)).unwrap();
            let (shape, expected) = golden.get(key);
            assert_eq!(rows.len(), shape[0]);
            for (row, want) in rows.iter().zip(expected.chunks_exact(shape[1])) {
                let cos = cosine(row, want);
                println!(
                    "{backend:?} {key}: cosine {cos:.8}, max abs diff {:.2e}",
                    max_abs_diff(row, want)
                );
                assert!(cos >= 0.99999, "{backend:?} {key}: cosine {cos}");
                assert!(max_abs_diff(row, want) <= TOLERANCE);
            }
        }
    }
}

#[test]
fn minilm_attention_probabilities() {
    let golden = Golden::open("minilm_golden.safetensors");
    for backend in BACKENDS {
        let embedder = Embedder::load(common::minilm(), backend.device().unwrap()).unwrap();
        for (i, text) in sentences().iter().enumerate().take(2) {
            let out = block_on(embedder.attention(text)).unwrap();
            let (shape, expected) = golden.get(&format!("attention.{i}.layer2"));
            let (heads, seq) = (shape[0], shape[1]);
            assert_eq!(
                (out.num_layers, out.num_heads, out.tokens.len()),
                (6, heads, seq)
            );
            let layer2 = &out.weights[2 * heads * seq * seq..3 * heads * seq * seq];
            let diff = max_abs_diff(layer2, expected);
            println!("{backend:?} attention.{i}.layer2: max abs diff {diff:.2e}");
            assert!(diff <= TOLERANCE);
        }
    }
}

fn tiny(name: &str, backend: Backend) {
    let golden = Golden::open(&format!("{name}_golden.safetensors"));
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join(format!("{name}_golden.json"))).unwrap(),
    )
    .unwrap();
    let pipeline = FillMask::load(
        ModelFiles::from_dir(&common::fixtures().join(name)).unwrap(),
        backend.device().unwrap(),
    )
    .unwrap();
    for (i, text) in meta["texts"].as_array().unwrap().iter().enumerate() {
        let text = text.as_str().unwrap();
        let encoding = pipeline.tokenizer.encode(text).unwrap();
        let expected_ids: Vec<u32> = golden
            .get(&format!("ids.{i}"))
            .1
            .iter()
            .map(|x| *x as u32)
            .collect();
        assert_eq!(encoding.ids, expected_ids, "{name} ids for {text:?}");
        let batch = Batch::new(&[encoding], 0, &pipeline.device);
        let logits = read(pipeline.model.forward(&batch));
        let diff = max_abs_diff(&logits, &golden.get(&format!("logits.{i}")).1);
        println!("{backend:?} {name} logits.{i}: max abs diff {diff:.2e}");
        assert!(diff <= TOLERANCE, "{backend:?} {name} text {i}: {diff}");

        let output = block_on(pipeline.predict(text, 5)).unwrap();
        let want = meta["fill_mask"][i].as_array().unwrap();
        assert_eq!(output.masks.len(), want.len());
        for (got, want) in output.masks.iter().zip(want) {
            for (p, w) in got.iter().zip(want.as_array().unwrap()) {
                assert_eq!(p.token_id as u64, w["token_id"].as_u64().unwrap());
                assert_eq!(p.token, w["token"].as_str().unwrap());
                assert!((p.score as f64 - w["score"].as_f64().unwrap()).abs() <= 1e-4);
                assert_eq!(p.sequence, w["sequence"].as_str().unwrap());
            }
        }
    }
}

#[test]
fn tiny_mlm_f32_tied_decoder_vocab_txt() {
    for backend in BACKENDS {
        tiny("tiny-mlm", backend);
    }
}

#[test]
fn tiny_mlm_bf16_sharded_untied_gelu_new() {
    for backend in BACKENDS {
        tiny("tiny-mlm-bf16-sharded", backend);
    }
}

#[test]
fn tiny_mlm_f16_relu() {
    for backend in BACKENDS {
        tiny("tiny-mlm-f16", backend);
    }
}

/// The shipped fill-mask model (models/ delta + the wheel's word embeddings, assembled by setup) against
/// transformers' fill-mask pipeline on the same files (`scripts/reference.py --mlm`).
#[test]
fn shipped_fill_mask_model_matches_transformers() {
    let dir = common::minilm_dir().with_file_name("minilm-l6-mlm");
    assert!(
        dir.join("model.safetensors.index.json").exists(),
        "{} is missing: run scripts/setup.sh",
        dir.display()
    );
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("minilm-l6-mlm_golden.json")).unwrap(),
    )
    .unwrap();
    let pipeline = FillMask::load(
        ModelFiles::from_dir(&dir).unwrap(),
        Backend::Cpu.device().unwrap(),
    )
    .unwrap();
    for (text, want) in meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(meta["fill_mask"].as_array().unwrap())
    {
        let output = block_on(pipeline.predict(text.as_str().unwrap(), 5)).unwrap();
        let got = &output.masks[0];
        // Ranks may swap only between near-equal scores; each token's score must match.
        for w in want.as_array().unwrap() {
            let id = w["token_id"].as_u64().unwrap() as u32;
            let p = got
                .iter()
                .find(|p| p.token_id == id)
                .unwrap_or_else(|| panic!("{text}: {} missing from {got:?}", w["token"]));
            let diff = (p.score as f64 - w["score"].as_f64().unwrap()).abs();
            assert!(
                diff <= 1e-4,
                "{text}: score of {} differs by {diff}",
                p.token
            );
        }
        println!(
            "{text} → {}",
            got.iter()
                .map(|p| p.token.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// The Linear kernel on shapes that are not multiples of its tile (edge rows and columns), with the
/// weight contiguous and as a transposed view, against the sum computed here in f64.
#[test]
fn linear_on_edge_shapes_matches_f64() {
    use burn::nn::LinearConfig;
    use burn::tensor::{Tensor, TensorData};
    let (rows, width, out) = (7, 13, 10);
    let value = |i: usize| ((i * 37 % 101) as f32 / 101.0) - 0.5;
    let x: Vec<f32> = (0..rows * width).map(value).collect();
    let w: Vec<f32> = (0..width * out).map(|i| value(i + 5)).collect();
    let b: Vec<f32> = (0..out).map(|i| value(i + 11)).collect();
    for backend in BACKENDS {
        let device = backend.device().unwrap();
        let mut layer = LinearConfig::new(width, out).init(&device);
        layer.weight = layer
            .weight
            .map(|_| Tensor::from_data(TensorData::new(w.clone(), [width, out]), &device));
        layer.bias = layer
            .bias
            .map(|p| p.map(|_| Tensor::from_data(TensorData::new(b.clone(), [out]), &device)));
        let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, width]), &device);
        let got = read(webbert::linear::linear(&layer, input, false));
        let want: Vec<f32> = (0..rows * out)
            .map(|i| {
                let (r, c) = (i / out, i % out);
                let dot: f64 = (0..width)
                    .map(|k| (x[r * width + k] * w[k * out + c]) as f64)
                    .sum();
                (dot + b[c] as f64) as f32
            })
            .collect();
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-5, "{backend:?}: max abs diff {diff}");
        // The same weight stored `[out, in]` and passed as a transposed view (the tied MLM decoder's case).
        let w_t: Vec<f32> = (0..out * width)
            .map(|i| w[(i % width) * out + i / width])
            .collect();
        let transposed =
            Tensor::<2>::from_data(TensorData::new(w_t, [out, width]), &device).transpose();
        let input = Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, width]), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(b.clone(), [out]), &device);
        let got = webbert::linear::affine(input, transposed, bias, false)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= 1e-5,
            "{backend:?} transposed weight: max abs diff {diff}"
        );
    }
}
