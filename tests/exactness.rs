//! The burn model against PyTorch's outputs (tests/fixtures, from scripts/reference.py), on every backend.
//! Targets: max abs diff ≤ 1e-4 on hidden states, logits and probabilities; cosine ≥ 0.99999 on embeddings.

mod common;

use common::{
    Golden, TARGETS, Target, WEBGPU_DEFAULT_TARGETS, block_on, cosine, floats, max_abs_diff,
};
use serde_json::Value;
use webbert::model::heads::pool;
use webbert::model::{Batch, BatchData};
use webbert::ops::attention::with_window_scores_bytes;
use webbert::ops::top_k::MAX_GPU_K;
use webbert::{
    Aggregation, Backend, Checkpoint, Classifier, Embedder, FillMask, ModelFiles, Pooling,
    QaOptions, QuestionAnswerer, TokenClassifier, TokenizerFiles, WeightsDtype,
};

const TOLERANCE: f32 = 1e-4;

fn sentences() -> Vec<String> {
    common::strings(&common::golden_json("minilm")["sentences"])
}

fn read(t: burn::tensor::Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn minilm_hidden_states(target: Target) {
    let golden = Golden::open("minilm_golden.safetensors");
    let embedder = Embedder::load(common::minilm(), target.device()).unwrap();
    for (i, text) in sentences().iter().enumerate() {
        let encoding = embedder.tokenizer.encode(text).unwrap();
        let batch = Batch::new(&[encoding], 0, &embedder.device);
        let hidden = target.run(|| read(embedder.model.forward(&batch)));
        let (shape, expected) = golden.get(&format!("hidden.{i}"));
        assert_eq!(hidden.len(), shape.iter().product::<usize>());
        let diff = max_abs_diff(&hidden, expected);
        println!("{target:?} hidden.{i}: max abs diff {diff:.2e}");
        assert!(
            diff <= TOLERANCE,
            "{target:?} sentence {i}: max abs diff {diff}"
        );
    }
}

#[test]
fn minilm_hidden_states_cpu() {
    minilm_hidden_states(TARGETS[0]);
}

#[test]
fn minilm_hidden_states_wgpu_serial() {
    minilm_hidden_states(TARGETS[1]);
}

#[test]
fn minilm_hidden_states_wgpu_tiled() {
    minilm_hidden_states(TARGETS[2]);
}

#[test]
fn minilm_embeddings_batched_with_padding() {
    let golden = Golden::open("minilm_golden.safetensors");
    let texts = sentences();
    for target in TARGETS {
        let embedder = Embedder::load(common::minilm(), target.device()).unwrap();
        for (pooling, normalize, key) in [
            (Pooling::Mean, true, "embedding.mean"),
            (Pooling::Cls, true, "embedding.cls"),
            (Pooling::Mean, false, "embedding.mean_raw"),
        ] {
            let rows = target.run(|| block_on(embedder.embed(&texts, pooling, normalize)).unwrap());
            let (shape, expected) = golden.get(key);
            assert_eq!(rows.len(), shape[0]);
            for (row, want) in rows.iter().zip(expected.chunks_exact(shape[1])) {
                let cos = cosine(row, want);
                println!(
                    "{target:?} {key}: cosine {cos:.8}, max abs diff {:.2e}",
                    max_abs_diff(row, want)
                );
                assert!(cos >= 0.99999, "{target:?} {key}: cosine {cos}");
                assert!(max_abs_diff(row, want) <= TOLERANCE);
            }
        }
    }
}

/// More texts than one batch holds: each row is the text's own embedding, in input order, whichever
/// texts it was batched (and padded) with.
#[test]
fn many_texts_are_embedded_in_chunks_in_order() {
    let texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "{} {}",
                sentences()[i % sentences().len()],
                "again ".repeat(i % 7)
            )
        })
        .collect();
    // The chunking is the pipeline's, the same on every device: the CPU and one wgpu shape cover it.
    for target in &TARGETS[..2] {
        let target = *target;
        let embedder = Embedder::load(common::minilm(), target.device()).unwrap();
        let mut steps = Vec::new();
        let rows = target.run(|| {
            block_on(
                embedder.embed_with(&texts, Pooling::Mean, true, async |done, total| {
                    steps.push((done, total));
                    Ok(())
                }),
            )
            .unwrap()
        });
        assert_eq!(rows.len(), texts.len());
        assert_eq!(steps, [(32, 40), (40, 40)]);
        // Grouped by length, so each group's texts went in in another order than they came.
        for i in 0..texts.len() {
            let alone = target.run(|| {
                block_on(embedder.embed(std::slice::from_ref(&texts[i]), Pooling::Mean, true))
                    .unwrap()
            });
            let cos = cosine(&rows[i], &alone[0]);
            assert!(
                cos >= 0.99999,
                "{target:?} text {i}: cosine {cos} to its own embedding"
            );
        }
    }
}

/// On a GPU (tiled kernels) a call's kernels are recorded the second time its shape comes, then replayed
/// over inputs written in place: each replayed result is its own text's, as on the CPU, after calls of
/// other shapes and while an earlier replay's result is still unread. CPU-backed adapters (serial kernels)
/// record nothing.
/// A fixture's pipeline on the CPU, and on the GPU target whose kernels are tiled (the ones that record).
fn on_cpu_and_tiled<P>(
    name: &str,
    load: fn(ModelFiles, burn::tensor::Device) -> webbert::Result<P>,
) -> (P, P) {
    let files = || ModelFiles::from_dir(&common::fixtures().join(name)).unwrap();
    let cpu = load(files(), Backend::Cpu.device().unwrap()).unwrap();
    (cpu, load(files(), TARGETS[2].device()).unwrap())
}

#[test]
fn replayed_calls_match_the_cpu() {
    let texts = [
        "A man is playing a guitar.",
        "A woman is cutting an onion.",
        "The cat sleeps on the sofa.",
        "The stock market fell sharply today.",
    ]
    .map(String::from);
    let longer = "A much longer sentence, with commas and more words, so that its shape differs.";
    let cpu = Embedder::load(common::minilm(), Backend::Cpu.device().unwrap()).unwrap();
    let gpu = Embedder::load(common::minilm(), TARGETS[2].device()).unwrap();
    let lengths = texts
        .each_ref()
        .map(|t| gpu.tokenizer.encode(t).unwrap().ids.len());
    assert!(lengths.iter().all(|&n| n == lengths[0]), "{lengths:?}");
    let embed = |pipeline: &Embedder, text: &str| {
        TARGETS[2]
            .run(|| block_on(pipeline.embed(&[text.to_string()], Pooling::Mean, true)).unwrap())
    };
    let order = [0, 1, usize::MAX, 2, 3, 0];
    for (call, &i) in order.iter().enumerate() {
        let text = texts.get(i).map_or(longer, String::as_str);
        let (got, want) = (embed(&gpu, text), embed(&cpu, text));
        let diff = max_abs_diff(&got[0], &want[0]);
        assert!(
            diff <= TOLERANCE,
            "call {call} ({text:?}): max abs diff {diff}"
        );
    }
    // Seen, then recorded and replayed, then replayed three more times.
    assert_eq!(gpu.replays.replayed(), 4);
    let serial = Embedder::load(common::minilm(), TARGETS[1].device()).unwrap();
    for text in &texts[..3] {
        TARGETS[1]
            .run(|| block_on(serial.embed(std::slice::from_ref(text), Pooling::Mean, true)))
            .unwrap();
    }
    assert_eq!(serial.replays.replayed(), 0);

    // A replay's output is the recording's own buffer: while it is unread, the shape runs as it comes.
    let run = |text: &str| {
        let encoding = gpu.tokenizer.encode(text).unwrap();
        let data = BatchData::new(&[encoding], gpu.pad_id);
        TARGETS[2].run(|| {
            gpu.replays
                .run("test", [0, 0], &data, &gpu.device, |batch: &Batch| {
                    let hidden = gpu.model.forward(batch);
                    pool(hidden, batch.attention_mask.clone(), Pooling::Mean, true)
                })
        })
    };
    for text in &texts[..2] {
        block_on(run(text).read()).unwrap();
    }
    let held = run(&texts[2]);
    assert_eq!(gpu.replays.replayed(), 6);
    let meanwhile = block_on(run(&texts[3]).read()).unwrap();
    assert_eq!(gpu.replays.replayed(), 6);
    // Once its read is queued (the copy goes ahead of later work), the shape replays again.
    let held = TARGETS[2].run(|| held.start_read());
    let next = block_on(run(&texts[0]).read()).unwrap();
    assert_eq!(gpu.replays.replayed(), 7);
    for (rows, text) in [
        (block_on(held.values()).unwrap(), &texts[2]),
        (meanwhile, &texts[3]),
        (next, &texts[0]),
    ] {
        let diff = max_abs_diff(&rows, &embed(&cpu, text)[0]);
        assert!(diff <= TOLERANCE, "{text:?}: max abs diff {diff}");
    }

    // Fill-mask records the encoder, the masked rows' head and the top-k as one.
    let (cpu, gpu) = on_cpu_and_tiled("tiny-mlm", FillMask::load);
    let texts = [
        "the [MASK] dog jumped over the fox",
        "the dog [MASK] over the lazy fox",
        "the dog jumped over the [MASK] fox",
        "the [MASK] dog jumped over the fox",
    ];
    let lengths = texts.map(|t| gpu.tokenizer.encode(t).unwrap().ids.len());
    assert!(lengths.iter().all(|&n| n == lengths[0]), "{lengths:?}");
    for text in texts {
        let predict =
            |pipeline: &FillMask| TARGETS[2].run(|| block_on(pipeline.predict(text, 5)).unwrap());
        let (got, want) = (predict(&gpu), predict(&cpu));
        for (got, want) in got.masks[0].iter().zip(&want.masks[0]) {
            assert_eq!(got.token_id, want.token_id, "{text:?}");
            assert!((got.score - want.score).abs() <= TOLERANCE, "{text:?}");
        }
    }
    assert_eq!(gpu.replays.replayed(), 3);

    // And a classifier's logits, of pairs (segment ids are inputs too).
    let (cpu, gpu) = on_cpu_and_tiled("tiny-bert-cls", Classifier::load);
    let pairs = [
        ("the dog", "over the fox"),
        ("the fox", "over the dog"),
        ("over the", "dog the fox"),
        ("the dog", "over the fox"),
    ];
    for (a, b) in pairs {
        let logits = |pipeline: &Classifier| {
            TARGETS[2].run(|| block_on(pipeline.logits(&[(a, Some(b))])).unwrap())
        };
        let diff = max_abs_diff(&logits(&gpu)[0], &logits(&cpu)[0]);
        assert!(diff <= TOLERANCE, "{a:?} / {b:?}: max abs diff {diff}");
    }
    assert_eq!(gpu.replays.replayed(), 3);
    // One call of three batches of one shape, each launched before the one before is read: the first
    // runs as it comes, the second is recorded, the third replays while the second's values come back.
    let (cpu, gpu) = on_cpu_and_tiled("tiny-bert-cls", Classifier::load);
    let many: Vec<_> = (0..96)
        .map(|i| pairs[i % 3])
        .map(|(a, b)| (a, Some(b)))
        .collect();
    let logits =
        |pipeline: &Classifier| TARGETS[2].run(|| block_on(pipeline.logits(&many)).unwrap());
    let (got, want) = (logits(&gpu), logits(&cpu));
    assert_eq!(gpu.replays.replayed(), 2);
    assert_eq!(got.len(), many.len());
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        let diff = max_abs_diff(got, want);
        assert!(diff <= TOLERANCE, "pair {i}: max abs diff {diff}");
    }
    // Not all alike: each row is its own pair's.
    assert!(max_abs_diff(&want[0], &want[1]) > 1e-3);

    // A token classifier's logits at every token.
    let (cpu, gpu) = on_cpu_and_tiled("tiny-bert-ner", TokenClassifier::load);
    // Texts of 5 to 8 tokens (the fixture's vocabulary is small), padded to 16 where calls are recorded:
    // one recording serves them all.
    let texts = [
        "the fox jumped",
        "where did it run",
        "what did it jump",
        "the dog jumped",
    ];
    let lengths = texts.map(|t| gpu.tokenizer.encode(t).unwrap().ids.len());
    assert_eq!(lengths, [5, 8, 6, 6]);
    for text in texts {
        let logits = |pipeline: &TokenClassifier| {
            TARGETS[2].run(|| block_on(pipeline.logits(text)).unwrap().1.concat())
        };
        let diff = max_abs_diff(&logits(&gpu), &logits(&cpu));
        assert!(diff <= TOLERANCE, "{text:?}: max abs diff {diff}");
    }
    assert_eq!(gpu.replays.replayed(), 3);

    // And a question answerer's start and end logits, of a context in
    // overlapping chunks (one batch).
    let (cpu, gpu) = on_cpu_and_tiled("tiny-bert-qa", QuestionAnswerer::load);
    let options = QaOptions {
        max_seq_len: 16,
        doc_stride: 4,
        ..QaOptions::new(64)
    };
    let context = "the quick brown fox jumped over the lazy dog and ran into the woods";
    // Questions of one length, so that each call's context falls into as many chunks.
    for question in [
        "what did it jump",
        "the dog jumped",
        "over the dog",
        "what did it jump",
    ] {
        let logits = |pipeline: &QuestionAnswerer| {
            let (spans, logits) =
                TARGETS[2].run(|| block_on(pipeline.logits(question, context, &options)).unwrap());
            assert!(spans.len() > 1, "{question:?}");
            logits
                .into_iter()
                .flat_map(|l| l.start.into_iter().chain(l.end))
                .collect::<Vec<f32>>()
        };
        let diff = max_abs_diff(&logits(&gpu), &logits(&cpu));
        assert!(diff <= TOLERANCE, "{question:?}: max abs diff {diff}");
    }
    assert_eq!(gpu.replays.replayed(), 3);
}

#[test]
fn an_error_from_progress_stops_embedding_after_that_group() {
    let texts: Vec<String> = (0..70).map(|i| format!("text number {i}")).collect();
    let embedder = Embedder::load(common::minilm(), TARGETS[0].device()).unwrap();
    let mut calls = 0;
    let result = block_on(
        embedder.embed_with(&texts, Pooling::Mean, true, async |_, _| {
            calls += 1;
            Err(webbert::Error::Aborted)
        }),
    );
    assert!(matches!(result, Err(webbert::Error::Aborted)));
    assert_eq!(calls, 1, "groups after the abort still ran");
}

#[test]
fn minilm_attention_probabilities() {
    let golden = Golden::open("minilm_golden.safetensors");
    for target in TARGETS {
        let embedder = Embedder::load(common::minilm(), target.device()).unwrap();
        for (i, text) in sentences().iter().enumerate().take(2) {
            let out = target.run(|| block_on(embedder.attention(text)).unwrap());
            let (shape, expected) = golden.get(&format!("attention.{i}.layer2"));
            let (heads, seq) = (shape[0], shape[1]);
            assert_eq!(
                (out.num_layers, out.num_heads, out.tokens.len()),
                (6, heads, seq)
            );
            let layer2 = &out.weights[2 * heads * seq * seq..3 * heads * seq * seq];
            let diff = max_abs_diff(layer2, expected);
            println!("{target:?} attention.{i}.layer2: max abs diff {diff:.2e}");
            assert!(diff <= TOLERANCE);
        }
    }
}

/// Every kernel runs on a device that grants only WebGPU's default limits, as an adapter offering no more
/// does (Chrome gives 8 or 10 storage buffers a kernel, by device): each family's fill-mask, the heads, the
/// embedders, and the fp16 and q8 variants, against the same references as on lavapipe's own limits. wgpu
/// refuses a kernel over a limit when it is built, which fails the test.
#[test]
fn kernels_fit_webgpu_default_limits() {
    for target in WEBGPU_DEFAULT_TARGETS {
        for family in [
            "mlm",
            "mlm-bf16-sharded",
            "roberta",
            "distilbert",
            "albert",
            "electra-generator",
            "mpnet",
            "deberta-v2",
            "modernbert",
        ] {
            tiny(&format!("tiny-{family}"), target);
        }
        classifier("tiny-bert-cls", target);
        token_classifier("tiny-bert-ner", target);
        question_answerer("tiny-bert-qa", target);
        sentence_embeddings("tiny-deberta-v2", target);
        minilm_hidden_states(target);
    }
    packed_word_tables_match_the_cpu(&WEBGPU_DEFAULT_TARGETS);
}

fn tiny(name: &str, target: Target) {
    let golden = Golden::open(&format!("{name}_golden.safetensors"));
    let meta = common::golden_json(name);
    let pipeline = FillMask::load(
        ModelFiles::from_dir(&common::fixtures().join(name)).unwrap(),
        target.device(),
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
        let mask = pipeline.tokenizer.mask_token_id().unwrap();
        let positions: Vec<usize> = (encoding.ids.iter().enumerate())
            .filter(|(_, id)| **id == mask)
            .map(|(i, _)| i)
            .collect();
        let batch = Batch::new(&[encoding], 0, &pipeline.device);
        let logits = target.run(|| read(pipeline.model.forward(&batch)));
        let diff = max_abs_diff(&logits, &golden.get(&format!("logits.{i}")).1);
        println!("{target:?} {name} logits.{i}: max abs diff {diff:.2e}");
        assert!(diff <= TOLERANCE, "{target:?} {name} text {i}: {diff}");

        let output = target.run(|| block_on(pipeline.predict(text, 5)).unwrap());
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

        // Past the GPU kernel's k the host selects from the logits read back: PyTorch's probabilities,
        // best first, and none left out above the last.
        let k = MAX_GPU_K + 6;
        let output = target.run(|| block_on(pipeline.predict(text, k)).unwrap());
        let want = &golden.get(&format!("logits.{i}")).1;
        let vocab = want.len() / batch.input_ids.dims()[1];
        assert_eq!(output.masks.len(), positions.len());
        for (got, pos) in output.masks.iter().zip(positions) {
            let row = &want[pos * vocab..][..vocab];
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
            let probability = |id: usize| (row[id] - max).exp() / sum;
            assert_eq!(got.len(), k.min(vocab));
            for p in got {
                let want = probability(p.token_id as usize);
                assert!(
                    (p.score - want).abs() <= 1e-4,
                    "{name}: {} vs {want}",
                    p.score
                );
            }
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            let last = got.last().unwrap().score;
            let chosen: std::collections::HashSet<u32> = got.iter().map(|p| p.token_id).collect();
            let left_out = (0..vocab).filter(|&id| !chosen.contains(&(id as u32)));
            assert!(
                left_out.map(probability).all(|p| p <= last + 1e-4),
                "{name}"
            );
        }
    }
}

#[test]
fn tiny_mlm_f32_tied_decoder_vocab_txt() {
    for target in TARGETS {
        tiny("tiny-mlm", target);
    }
}

#[test]
fn tiny_mlm_bf16_sharded_untied_gelu_new() {
    for target in TARGETS {
        tiny("tiny-mlm-bf16-sharded", target);
    }
}

#[test]
fn tiny_mlm_f16_relu() {
    for target in TARGETS {
        tiny("tiny-mlm-f16", target);
    }
}

/// The shipped fill-mask model (models/' int8 file widened to f32 by setup) against transformers' fill-mask
/// pipeline on the same files (`scripts/reference.py --mlm`).
#[test]
fn shipped_fill_mask_model_matches_transformers() {
    let dir = common::minilm_dir().with_file_name("minilm-l6-mlm");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/setup.sh",
        dir.display()
    );
    let meta: Value = common::golden_json("minilm-l6-mlm");
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

/// The Linear kernels on shapes that are not multiples of their tiles (edge rows and columns), with the
/// weight contiguous and as a transposed view, on their own, followed by Add & Norm (where the tiled
/// kernel splits the depth in slices that the norm adds up) and added to a residual as they are written
/// (into the residual's own buffer, or a copy where another tensor still holds it), with a bias and β and
/// without (ModernBERT's layers, whose kernels then read neither), against sums computed here in f64.
#[test]
fn linear_on_edge_shapes_matches_f64() {
    use burn::module::Param;
    use burn::nn::{LayerNormConfig, Linear};
    use burn::tensor::{Tensor, TensorData};
    use webbert::ops::add_norm::dense_add_norm;
    use webbert::ops::linear::{
        LARGE_TILE, Plan, TILES, TRIAL_TILES, affine, linear_add, with_plan,
    };
    let (rows, width, out, eps) = (37, 150, 70, 1e-12);
    let value = |i: usize| ((i * 37 % 101) as f32 / 101.0) - 0.5;
    let x: Vec<f32> = (0..rows * width).map(value).collect();
    let w: Vec<f32> = (0..width * out).map(|i| value(i + 5)).collect();
    let residual: Vec<f32> = (0..rows * out).map(|i| value(i + 17)).collect();
    let gamma: Vec<f32> = (0..out).map(|i| 1.0 + value(i + 3)).collect();
    // The same weight stored `[out, in]`, to be passed as a transposed view (the tied decoder's case).
    let w_t: Vec<f32> = (0..out * width)
        .map(|i| w[(i % width) * out + i / width])
        .collect();
    for biased in [true, false] {
        // Absent, they are zeros to the sums here and `None` to the model.
        let shift = |seed: usize| -> Vec<f32> {
            (0..out)
                .map(|i| if biased { value(i + seed) } else { 0.0 })
                .collect()
        };
        let (b, beta) = (shift(11), shift(7));
        let dense: Vec<f64> = (0..rows * out)
            .map(|i| {
                let (r, c) = (i / out, i % out);
                let dot: f64 = (0..width)
                    .map(|k| (x[r * width + k] * w[k * out + c]) as f64)
                    .sum();
                dot + b[c] as f64
            })
            .collect();
        let want_linear: Vec<f32> = dense.iter().map(|&y| y as f32).collect();
        let want_added: Vec<f32> = dense
            .iter()
            .zip(&residual)
            .map(|(&y, &r)| (y + r as f64) as f32)
            .collect();
        let want_norm: Vec<f32> = dense
            .chunks_exact(out)
            .zip(residual.chunks_exact(out))
            .flat_map(|(row, res)| {
                let sum: Vec<f64> = row.iter().zip(res).map(|(y, r)| y + *r as f64).collect();
                let mean = sum.iter().sum::<f64>() / out as f64;
                let var = sum.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / out as f64;
                let (gamma, beta) = (&gamma, &beta);
                sum.into_iter().enumerate().map(move |(c, v)| {
                    ((v - mean) / (var + eps).sqrt() * gamma[c] as f64 + beta[c] as f64) as f32
                })
            })
            .collect();
        // Each tile once (the bench's trial tiles too), with and without the depth split in slices
        // (which only Add & Norm takes).
        let tiles = TILES.iter().chain([&LARGE_TILE]).chain(&TRIAL_TILES);
        let plans: Vec<Option<Plan>> = [None]
            .into_iter()
            .chain(
                tiles
                    .zip([3, 1, 2].into_iter().cycle())
                    .map(|(&tile, splits)| Some(Plan { tile, splits })),
            )
            .collect();
        for target in TARGETS {
            let device = target.device();
            let tensor = |values: &[f32], shape: [usize; 2]| {
                Tensor::<2>::from_data(TensorData::new(values.to_vec(), shape), &device)
            };
            let vector = |values: &[f32]| {
                let tensor =
                    Tensor::<1>::from_data(TensorData::new(values.to_vec(), [out]), &device);
                biased.then_some(tensor)
            };
            let bias = vector(&b);
            let mut norm = LayerNormConfig::new(out).init(&device);
            norm.gamma = Param::from_tensor(Tensor::from_data(
                TensorData::new(gamma.clone(), [out]),
                &device,
            ));
            norm.beta = vector(&beta).map(Param::from_tensor);
            // A plan lays out the tiled kernel only.
            let tiled = matches!(target.1, webbert::ops::KernelShape::Tiled { .. });
            for &plan in plans.iter().filter(|plan| tiled || plan.is_none()) {
                let weights = [
                    tensor(&w, [width, out]),
                    tensor(&w_t, [out, width]).transpose(),
                ];
                for (weight, layout) in weights.into_iter().zip(["contiguous", "transposed"]) {
                    // The trial tiles (never chosen) in one layout only: lavapipe spends seconds
                    // compiling each of their unrolled kernels.
                    let trial = plan.is_some_and(|plan| TRIAL_TILES.contains(&plan.tile));
                    if trial && (layout == "transposed" || !biased) {
                        continue;
                    }
                    let layer = Linear {
                        weight: Param::from_tensor(weight.clone()),
                        bias: bias.clone().map(Param::from_tensor),
                    };
                    let read = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
                    let run = || {
                        let linear = read(affine(
                            tensor(&x, [rows, width]),
                            weight,
                            bias.clone(),
                            false,
                        ));
                        let normed = dense_add_norm(
                            &layer,
                            &norm,
                            eps,
                            tensor(&x, [rows, width]).reshape([1, rows, width]),
                            tensor(&residual, [rows, out]).reshape([1, rows, out]),
                        );
                        let x3 = || tensor(&x, [rows, width]).reshape([1, rows, width]);
                        let residual3 = || tensor(&residual, [rows, out]).reshape([1, rows, out]);
                        let held = residual3();
                        let added = [
                            linear_add(&layer, x3(), residual3()),
                            linear_add(&layer, x3(), held.clone()),
                        ];
                        let added = added.map(|t| read(t.reshape([rows, out])));
                        let held = read(held.reshape([rows, out]));
                        (linear, read(normed.reshape([rows, out])), added, held)
                    };
                    let (linear, normed, added, held) = target.run(|| match plan {
                        Some(plan) => with_plan(plan, run),
                        None => run(),
                    });
                    let case = format!("{target:?} {plan:?} {layout} weight, biased {biased}");
                    let diff = max_abs_diff(&linear, &want_linear);
                    assert!(diff <= 1e-5, "{case}: max abs diff {diff}");
                    let diff = max_abs_diff(&normed, &want_norm);
                    assert!(diff <= 1e-4, "{case}, Add & Norm: max abs diff {diff}");
                    for (added, residual_held) in added.iter().zip([false, true]) {
                        let diff = max_abs_diff(added, &want_added);
                        assert!(
                            diff <= 1e-5,
                            "{case}, residual added (held elsewhere: {residual_held}): max abs diff \
                         {diff}"
                        );
                    }
                    assert_eq!(held, residual, "{case}: a held residual was overwritten");
                }
            }
        }
    }
}

/// Attention with more queries and keys than one tile of the GPU kernels holds, padding in one item,
/// heads 64 wide (whose blocks shrink to fit lavapipe's 32 KiB of workgroup memory, as most browsers';
/// 128-wide heads' blocks are checked in `ops::attention`, their kernels take minutes to compile on lavapipe)
/// and too wide for the kernels (which fall back to burn's ops), against burn's attention on the CPU:
/// plain, with a bias after the scale (MPNet's, one for all items) and before it (DeBERTa's, per item), and
/// with a window narrower than a tile (whose padded queries reach no token) and wider than one.
#[test]
fn attention_kernels_match_burn_on_long_padded_batches() {
    use burn::tensor::{Tensor, TensorData};
    use webbert::ops::attention::{Scores, self_attention};
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
            .collect()
    };
    // Heads 32 and 64 wide (tiled on GPUs), 10 wide (not a multiple of 4: the serial kernel there),
    // 1,024 (burn's).
    let shapes = [
        (2, 70, 64, 2),
        (2, 70, 128, 2),
        (2, 12, 30, 3),
        (1, 5, 2048, 2),
    ];
    for (batch, seq, hidden, heads) in shapes {
        let plain = Scores::plain(hidden / heads);
        let windowed = |window| Scores {
            window: Some(window),
            ..plain
        };
        let deberta = Scores {
            scale: 0.7 * plain.scale,
            scale_bias: true,
            window: None,
        };
        let cases = [
            (None, plain),
            (Some(1), plain),
            (Some(batch), deberta),
            (None, windowed(3)),
            (None, windowed(40)),
        ];
        let qkv = values(batch * seq * 3 * hidden, 0);
        // The last item's final 9 tokens are padding.
        let tokens: Vec<f32> = (0..batch * seq)
            .map(|i| {
                if batch > 1 && i >= batch * seq - 9 {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        for (bias_items, scores) in cases {
            let bias = bias_items.map(|items| values(items * heads * seq * seq, 17));
            let attend = |target: Target| {
                let device = target.device();
                let qkv = Tensor::<3>::from_data(
                    TensorData::new(qkv.clone(), [batch, seq, 3 * hidden]),
                    &device,
                );
                let mask =
                    Tensor::<2>::from_data(TensorData::new(tokens.clone(), [batch, seq]), &device);
                let bias = bias.clone().zip(bias_items).map(|(bias, items)| {
                    Tensor::<4>::from_data(TensorData::new(bias, [items, heads, seq, seq]), &device)
                });
                target.run(|| read(self_attention(qkv, mask, bias, heads, scores)))
            };
            let want = attend(TARGETS[0]);
            for target in &TARGETS[1..] {
                let diff = max_abs_diff(&attend(*target), &want);
                println!(
                    "{target:?} {batch}×{seq}×{hidden}/{heads} {scores:?}, bias {bias_items:?}: \
                     max abs diff {diff:.2e}"
                );
                assert!(
                    diff <= 1e-5,
                    "{target:?} {batch}×{seq} {scores:?}: max abs diff {diff}"
                );
            }
        }
    }
}

/// Pooling (mean and `[CLS]`, scaled to unit length or not) of vectors 384, 768 and 1,024 wide with padding,
/// against burn's ops on the CPU. At 1,024 the kernel's workgroup memory (34 KiB) exceeds lavapipe's 32,
/// as most browsers', and burn's ops take over.
#[test]
fn pooling_matches_burn_at_every_width() {
    use burn::tensor::{Tensor, TensorData};
    let (batch, seq) = (3, 37);
    for width in [384, 768, 1024] {
        let hidden: Vec<f32> = (0..batch * seq * width)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
            .collect();
        // The second item's last 10 tokens are padding.
        let tokens: Vec<f32> = (0..batch * seq)
            .map(|i| {
                if i / seq == 1 && i % seq >= seq - 10 {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        for (pooling, normalize) in [
            (Pooling::Mean, true),
            (Pooling::Mean, false),
            (Pooling::Cls, true),
        ] {
            let run = |target: Target| {
                let device = target.device();
                let hidden = Tensor::<3>::from_data(
                    TensorData::new(hidden.clone(), [batch, seq, width]),
                    &device,
                );
                let mask =
                    Tensor::<2>::from_data(TensorData::new(tokens.clone(), [batch, seq]), &device);
                target.run(|| read(pool(hidden, mask, pooling, normalize).unsqueeze()))
            };
            let want = run(TARGETS[0]);
            for target in &TARGETS[1..] {
                let diff = max_abs_diff(&run(*target), &want);
                assert!(
                    diff <= 1e-5,
                    "{target:?} width {width} {pooling:?} {normalize}: max abs diff {diff}"
                );
            }
        }
    }
}

/// ModernBERT's rotary positions turning Q and K in place in the fused projection (several heads, more
/// tokens than one workgroup's units take, padding-sized odd lengths), against burn's ops on the CPU.
#[test]
fn rotary_kernel_matches_burn_ops() {
    use burn::tensor::{Tensor, TensorData};
    use webbert::ops::rotary::rotate_queries_keys;
    for (batch, seq, hidden, heads) in [(2, 7, 24, 3), (1, 300, 128, 2)] {
        let head_dim = hidden / heads;
        let qkv: Vec<f32> = (0..batch * seq * 3 * hidden)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
            .collect();
        let angles: Vec<f32> = (0..seq * head_dim)
            .map(|i| (i / head_dim) as f32 * 0.1 / (1 + i % (head_dim / 2)) as f32)
            .collect();
        let turn = |target: Target| {
            let device = target.device();
            let qkv = Tensor::<3>::from_data(
                TensorData::new(qkv.clone(), [batch, seq, 3 * hidden]),
                &device,
            );
            let table = |f: fn(f32) -> f32| {
                let values = angles.iter().map(|&a| f(a)).collect::<Vec<_>>();
                Tensor::<2>::from_data(TensorData::new(values, [seq, head_dim]), &device)
            };
            target.run(|| {
                read(rotate_queries_keys(
                    qkv,
                    table(f32::cos),
                    table(f32::sin),
                    heads,
                ))
            })
        };
        let want = turn(TARGETS[0]);
        // V comes through untouched, Q and K do not.
        let v = |out: &[f32]| -> Vec<f32> {
            out.chunks(3 * hidden)
                .flat_map(|row| row[2 * hidden..].to_vec())
                .collect()
        };
        assert_eq!(v(&want), v(&qkv));
        assert!(max_abs_diff(&want, &qkv) > 0.1);
        for target in &TARGETS[1..] {
            let diff = max_abs_diff(&turn(*target), &want);
            println!("{target:?} {batch}×{seq}×{hidden}/{heads}: max abs diff {diff:.2e}");
            assert!(
                diff <= 1e-6,
                "{target:?} {batch}×{seq}: max abs diff {diff}"
            );
        }
    }
}

/// ModernBERT's GeGLU, `GELU(input) · gate` from the halves of one product, with rows wider than a
/// workgroup's units, against burn's ops on the CPU (and those against the formula).
#[test]
fn geglu_kernel_matches_burn_ops() {
    use burn::tensor::{Tensor, TensorData};
    use webbert::ops::geglu::geglu;
    for (rows, width) in [(3, 5), (2, 600)] {
        let both: Vec<f32> = (0..rows * 2 * width)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 6.0)
            .collect();
        let gated = |target: Target| {
            let device = target.device();
            let both = Tensor::<3>::from_data(
                TensorData::new(both.clone(), [1, rows, 2 * width]),
                &device,
            );
            target.run(|| read(geglu(both)))
        };
        let want = gated(TARGETS[0]);
        // A spot check of the CPU's against the formula, then the GPU's against the CPU's.
        let erf_gelu = |x: f64| x * 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let first = erf_gelu(both[0] as f64) * both[width] as f64;
        assert!(
            (want[0] as f64 - first).abs() < 1e-6,
            "{} vs {first}",
            want[0]
        );
        for target in &TARGETS[1..] {
            let diff = max_abs_diff(&gated(*target), &want);
            println!("{target:?} {rows}×{width}: max abs diff {diff:.2e}");
            assert!(
                diff <= 1e-5,
                "{target:?} {rows}×{width}: max abs diff {diff}"
            );
        }
    }
}

/// DeBERTa's c2p and p2c scores (each alone and both) computed directly per (query, key), against burn's
/// products with the whole table and gathers on the CPU: several heads, more keys than a workgroup's units,
/// table rows read in no particular order (per distance).
#[test]
fn disentangled_kernel_matches_burn_ops() {
    use burn::tensor::{Int, Tensor, TensorData};
    use webbert::ops::disentangled::disentangled_scores;
    let (batch, seq, hidden, heads, rows) = (2, 300, 24, 3, 37);
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
            .collect()
    };
    let qkv = values(batch * seq * 3 * hidden, 0);
    let positions = values(rows * 2 * hidden, 5);
    let index = |seed: usize| -> Vec<i64> {
        (0..2 * seq - 1)
            .map(|i| ((i * 31 + seed) % rows) as i64)
            .collect()
    };
    for (c2p, p2c) in [(true, false), (false, true), (true, true)] {
        let scores = |target: Target| {
            let device = target.device();
            let rows_of = |on: bool, seed: usize| {
                on.then(|| {
                    Tensor::<1, Int>::from_data(
                        TensorData::new(index(seed), [2 * seq - 1]),
                        &device,
                    )
                })
            };
            let qkv = Tensor::<3>::from_data(
                TensorData::new(qkv.clone(), [batch, seq, 3 * hidden]),
                &device,
            );
            let positions = Tensor::<3>::from_data(
                TensorData::new(positions.clone(), [1, rows, 2 * hidden]),
                &device,
            );
            let (key_rows, query_rows) = (rows_of(c2p, 1), rows_of(p2c, 7));
            target.run(|| {
                let scores = disentangled_scores(qkv, positions, key_rows, query_rows, heads);
                scores
                    .expect("a term")
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            })
        };
        let want = scores(TARGETS[0]);
        for target in &TARGETS[1..] {
            let diff = max_abs_diff(&scores(*target), &want);
            println!("{target:?} c2p {c2p} p2c {p2c}: max abs diff {diff:.2e}");
            assert!(
                diff <= 1e-5,
                "{target:?} c2p {c2p} p2c {p2c}: max abs diff {diff}"
            );
        }
    }
}

/// Fill-mask's top-k: the GPU's passes (ties by lower id, as on the CPU) and, past their limit, burn's
/// sort, against the CPU's selection of the same logits.
#[test]
fn softmax_top_k_matches_cpu_selection() {
    use burn::tensor::{Tensor, TensorData};
    use webbert::ops::top_k::softmax_top_k;
    let vocab = 3000;
    // Many exact ties: values repeat every 250 ids.
    let logits: Vec<f32> = (0..2 * vocab)
        .map(|i| ((i % 250) as f32 * 0.37).sin() * 4.0)
        .collect();
    let distinct: Vec<f32> = (0..2 * vocab)
        .map(|i| (i as f32 * 0.0137).sin() * 4.0 + i as f32 * 1e-4)
        .collect();
    for (values, k) in [
        (&logits, 7),
        (&logits, MAX_GPU_K),
        (&distinct, MAX_GPU_K + 6),
    ] {
        let best = |target: Target| {
            let device = target.device();
            let logits =
                Tensor::<2>::from_data(TensorData::new(values.clone(), [2, vocab]), &device);
            target.run(|| {
                softmax_top_k(logits, k)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            })
        };
        let want = best(TARGETS[0]);
        // The probabilities of the top tokens sum to less than one, and the ids are all different.
        assert!(want[..k].iter().sum::<f32>() < 1.0);
        assert!(want[k..2 * k].windows(2).all(|p| p[0] != p[1]));
        for target in &TARGETS[1..] {
            let got = best(*target);
            for row in 0..2 {
                let (g, w) = (
                    &got[row * 2 * k..(row + 1) * 2 * k],
                    &want[row * 2 * k..(row + 1) * 2 * k],
                );
                assert_eq!(g[k..], w[k..], "{target:?} k={k} row {row}: ids");
                let diff = max_abs_diff(&g[..k], &w[..k]);
                assert!(
                    diff <= 1e-6,
                    "{target:?} k={k} row {row}: probabilities differ by {diff}"
                );
            }
        }
    }
}

/// `input·w + bias` on both GPU kernel shapes for a weight stored packed (`weight` on the device, `[depth,
/// cols]`, or `[cols, depth]` read transposed as the tied decoder reads the word table), against the sums
/// written out here from the values it holds (`w`, `[depth, cols]`): `rows` past one 64-row tile, the
/// depth over several of the tiled kernel's steps.
fn packed_linear_matches_sums(
    (rows, depth, cols): (usize, usize, usize),
    w: &[f32],
    weight: impl Fn(&burn::tensor::Device) -> burn::tensor::Tensor<2>,
) {
    use burn::tensor::{Tensor, TensorData};
    let input: Vec<f32> = (0..rows * depth).map(|i| (i as f32 * 0.37).sin()).collect();
    let bias: Vec<f32> = (0..cols).map(|c| c as f32 * 0.1).collect();
    let mut want = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let dot: f32 = (0..depth)
                .map(|k| input[r * depth + k] * w[k * cols + c])
                .sum();
            want[r * cols + c] = dot + bias[c];
        }
    }
    for target in &TARGETS[1..] {
        let device = target.device();
        let weight = weight(&device);
        let dtype = weight.dtype();
        let x = Tensor::<2>::from_data(TensorData::new(input.clone(), [rows, depth]), &device);
        let b = Tensor::<1>::from_data(TensorData::new(bias.clone(), [cols]), &device);
        let got: Vec<f32> = target.run(|| {
            let transposed = weight.dims() == [cols, depth];
            match transposed {
                true => webbert::ops::linear::affine_transposed(x, weight, Some(b)),
                false => webbert::ops::linear::affine(x, weight, Some(b), false),
            }
            .into_data()
            .try_into_vec()
            .unwrap()
        });
        let diff = max_abs_diff(&got, &want);
        println!("{target:?} {dtype:?} Linear: max abs diff {diff:.2e}");
        assert!(diff <= 1e-5, "{target:?}: {diff}");
    }
}

/// The GPU kernels' int8 Linear at a width that is not whole tiles (20 columns: the serial kernel's last
/// word is clamped), over blocks of 32 that straddle the tiled kernel's steps of 16.
#[test]
fn q8_linear_unpacks_every_column() {
    use burn::tensor::{Tensor, TensorData};
    let (depth, cols) = (96, 20);
    let (values, scales) = common::int8_values_and_scales(depth * cols);
    let w: Vec<f32> = (0..depth * cols)
        .map(|i| values[i] as f32 * scales[i / cols / 32 * cols + i % cols])
        .collect();
    packed_linear_matches_sums((70, depth, cols), &w, |device| {
        let scheme = webbert::ops::linear::q8_scheme(true);
        let data = TensorData::quantized(values.clone(), [depth, cols], scheme, &scales, None);
        Tensor::from_data(data, device)
    });
}

/// The same for an int8 word table read transposed by the tied decoder (`[cols, depth]`, blocks along
/// the depth): 96 deep, so each column's bytes span three blocks of scales.
#[test]
fn q8_table_decoder_unpacks_every_column() {
    use burn::tensor::{Tensor, TensorData};
    let (depth, cols) = (96, 20);
    let (values, scales) = common::int8_values_and_scales(cols * depth);
    let w: Vec<f32> = (0..depth * cols)
        .map(|i| {
            let (k, c) = (i / cols, i % cols);
            values[c * depth + k] as f32 * scales[c * depth / 32 + k / 32]
        })
        .collect();
    packed_linear_matches_sums((70, depth, cols), &w, |device| {
        let scheme = webbert::ops::linear::q8_table_scheme(true);
        let data = TensorData::quantized(values.clone(), [cols, depth], scheme, &scales, None);
        Tensor::from_data(data, device)
    });
}

/// The GPU kernels' f16 Linear (held as words, no `shader-f16` needed) at a width of 10 (the serial
/// kernel's last words clamped), with values from subnormal (below 6.1e-5) to 127: every half converted
/// exactly.
#[test]
fn f16_linear_unpacks_every_column() {
    use burn::tensor::{DType, Tensor, TensorData};
    let (depth, cols) = (48, 10);
    let halves: Vec<half::f16> = (0..depth * cols)
        .map(|i| {
            let v = ((i * 37 % 255) as i32 - 127) as f32 * 10f32.powi((i % 7) as i32 - 6);
            half::f16::from_f32(v)
        })
        .collect();
    assert!(
        halves
            .iter()
            .any(|h| h.to_f32() != 0.0 && h.to_f32().abs() < 6.1e-5)
    );
    let w: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    packed_linear_matches_sums((70, depth, cols), &w, |device| {
        let data = TensorData::new(halves.clone(), [depth, cols]);
        Tensor::from_data(data, (device, DType::F16))
    });
}

/// all-MiniLM-L6-v2's `dtype` variant in `dir` on every target: the reference sentences' embeddings
/// within `min_cosine` of PyTorch's f32. On the GPU targets the Linear weights stay as stored (`held`),
/// unpacked by the kernels, and the embeddings equal the CPU's (which widens the same weights at load)
/// to float rounding.
fn variant_on_every_target(
    dir: &std::path::Path,
    dtype: WeightsDtype,
    min_cosine: f64,
    held: fn(burn::tensor::DType) -> bool,
) {
    let golden = Golden::open("minilm_golden.safetensors");
    let (shape, expected) = golden.get("embedding.mean");
    let mut cpu_rows: Vec<Vec<f32>> = Vec::new();
    for (t, target) in TARGETS.into_iter().enumerate() {
        let files = ModelFiles::from_dir_as(dir, dtype).unwrap();
        let encoder =
            webbert::io::weights::load_bert(&files.checkpoint, &files.config, &target.device())
                .unwrap();
        let qkv = encoder.layers[0].attention.qkv.weight.val().dtype();
        assert_eq!(held(qkv), t > 0, "{target:?}: {qkv:?}");

        let embedder = Embedder::load(files, target.device()).unwrap();
        let rows =
            target.run(|| block_on(embedder.embed(&sentences(), Pooling::Mean, true)).unwrap());
        for (i, (row, want)) in rows.iter().zip(expected.chunks_exact(shape[1])).enumerate() {
            let cos = cosine(row, want);
            println!("{target:?} {dtype:?} embedding: cosine {cos:.8} to PyTorch's f32");
            assert!(cos >= min_cosine, "{target:?}: cosine {cos}");
            if let Some(cpu) = cpu_rows.get(i) {
                let diff = max_abs_diff(row, cpu);
                println!("{target:?} {dtype:?} embedding: max abs diff {diff:.2e} to the CPU's");
                assert!(diff <= 1e-5, "{target:?}: {diff}");
            }
        }
        if t == 0 {
            cpu_rows = rows;
        }
    }
}

/// Bytes of the weights of the encoder in `dir` (its `dtype` variant) as the GPU holds them.
fn gpu_weight_bytes(dir: &std::path::Path, dtype: WeightsDtype) -> usize {
    struct Bytes(usize);
    impl burn::module::ModuleVisitor for Bytes {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            let tensor = param.val();
            let n = tensor.shape().num_elements();
            self.0 += match tensor.dtype() {
                // A byte a value (four to a word on a GPU) and an f32 scale a block.
                burn::tensor::DType::QFloat(_) => n + n / webbert::io::checkpoint::Q8_BLOCK * 4,
                dtype => n * dtype.size(),
            };
        }
    }
    let files = ModelFiles::from_dir_as(dir, dtype).unwrap();
    let gpu = Backend::Wgpu.device().unwrap();
    let encoder = webbert::io::weights::load_bert(&files.checkpoint, &files.config, &gpu).unwrap();
    let mut bytes = Bytes(0);
    burn::module::Module::visit(&encoder, &mut bytes);
    bytes.0
}

/// The f16 variant (`webbert quantize --dtype fp16`): half the bytes, and half the GPU memory (the word
/// table stays f16 too); all-MiniLM-L6-v2's embeddings of the reference sentences within cosine 0.9999 of
/// PyTorch's, and the shipped fill-mask model's top-1 the same as in f32 on every reference text.
#[test]
fn fp16_variant_keeps_embeddings_and_fill_mask() {
    let out = std::env::temp_dir().join(format!("webbert-fp16-{}", std::process::id()));
    let device = Backend::Cpu.device().unwrap();
    let report =
        webbert::io::quantize::quantize_fp16(&common::minilm_dir(), &out, &device).unwrap();
    println!("all-MiniLM-L6-v2 fp16: {report:?}");
    assert!(report.bytes * 2 <= report.original_bytes + 1_000_000);
    assert!(report.min_cosine >= webbert::io::quantize::FP16_MIN_COSINE);
    variant_on_every_target(&out, WeightsDtype::Auto, 0.9999, |dtype| {
        dtype == burn::tensor::DType::F16
    });
    let f32_bytes = gpu_weight_bytes(&common::minilm_dir(), WeightsDtype::Fp32);
    let f16_bytes = gpu_weight_bytes(&out, WeightsDtype::Fp16);
    println!(
        "all-MiniLM-L6-v2 on the GPU: {f32_bytes} bytes of weights in f32, {f16_bytes} in fp16"
    );
    assert!(
        f16_bytes * 100 <= f32_bytes * 51,
        "{f16_bytes} of {f32_bytes}"
    );
    std::fs::remove_dir_all(&out).unwrap();

    let dir = common::minilm_dir().with_file_name("minilm-l6-mlm");
    let meta: Value = common::golden_json("minilm-l6-mlm");
    let f32_files = ModelFiles::from_dir(&dir).unwrap();
    let f16 = f32_files.checkpoint.to_f16().unwrap();
    let f16_files = ModelFiles::from_lookup(WeightsDtype::Fp16, |name| match name {
        "model.fp16.safetensors" => Ok(Some(f16.clone())),
        name => webbert::io::source::read_optional(&dir.join(name)),
    })
    .unwrap();
    let (a, b) = (
        FillMask::load(f32_files, device.clone()).unwrap(),
        FillMask::load(f16_files, device).unwrap(),
    );
    let texts = meta["texts"].as_array().unwrap();
    let (mut same, mut shared) = (0, 0);
    for text in texts {
        let text = text.as_str().unwrap();
        let (x, y) = (
            block_on(a.predict(text, 5)).unwrap(),
            block_on(b.predict(text, 5)).unwrap(),
        );
        same += usize::from(x.masks[0][0].token_id == y.masks[0][0].token_id);
        shared += x.masks[0]
            .iter()
            .filter(|p| y.masks[0].iter().any(|q| q.token_id == p.token_id))
            .count();
    }
    println!(
        "fp16 fill-mask: top-1 identical on {same} of {} texts, {shared} of {} top-5 tokens shared",
        texts.len(),
        5 * texts.len()
    );
    assert_eq!(same, texts.len());
}

/// An f16 or q8 checkpoint's word table stays as stored on the GPU (f16; int8 with its block scales),
/// read so by the embeddings' kernel (with learned positions, and without: ModernBERT, DeBERTa) and,
/// transposed, by the tied decoder in both kernel shapes: the logits equal the CPU's, which widens the
/// same values at load.
#[test]
fn packed_word_table_is_read_as_stored_on_the_gpu() {
    packed_word_tables_match_the_cpu(&TARGETS[1..]);
}

fn packed_word_tables_match_the_cpu(gpu_targets: &[Target]) {
    use burn::tensor::DType;
    for name in ["tiny-mlm-f16", "tiny-modernbert", "tiny-deberta-v2"] {
        let dir = common::fixtures().join(name);
        let checkpoint = ModelFiles::from_dir(&dir).unwrap().checkpoint;
        for (dtype, file, bytes) in [
            (
                WeightsDtype::Fp16,
                "model.fp16.safetensors",
                checkpoint.to_f16().unwrap(),
            ),
            (
                WeightsDtype::Q8,
                "model.q8.safetensors",
                checkpoint.to_q8().unwrap(),
            ),
        ] {
            let meta = common::golden_json(name);
            let text = meta["texts"][0].as_str().unwrap();
            let mut cpu_logits = Vec::new();
            for &target in TARGETS[..1].iter().chain(gpu_targets) {
                let files = ModelFiles::from_lookup(dtype, |wanted| match wanted {
                    wanted if wanted == file => Ok(Some(bytes.clone())),
                    wanted => webbert::io::source::read_optional(&dir.join(wanted)),
                })
                .unwrap();
                let pipeline = FillMask::load(files, target.device()).unwrap();
                let table = pipeline.model.bert.embeddings.word_embeddings.weight.val();
                let on_gpu = target.0 == Backend::Wgpu;
                let held = match dtype {
                    WeightsDtype::Q8 => matches!(table.dtype(), DType::QFloat(_)),
                    _ => table.dtype() == DType::F16,
                };
                assert_eq!(held, on_gpu, "{target:?} {name} {dtype:?}");
                let encoding = pipeline.tokenizer.encode(text).unwrap();
                let batch = Batch::new(&[encoding], 0, &pipeline.device);
                let logits = target.run(|| read(pipeline.model.forward(&batch)));
                if !on_gpu {
                    cpu_logits = logits;
                    continue;
                }
                let diff = max_abs_diff(&logits, &cpu_logits);
                println!(
                    "{target:?} {name} {dtype:?} table: logits max abs diff {diff:.2e} to the CPU's"
                );
                assert!(diff <= 1e-5, "{target:?} {name} {dtype:?}: {diff}");
            }
        }
    }
}

/// RoBERTa: byte-level BPE, `<mask>`, positions counted from `pad_token_id + 1`, one segment.
#[test]
fn tiny_roberta_masked_lm() {
    for target in TARGETS {
        tiny("tiny-roberta", target);
    }
}

/// XLM-RoBERTa: RoBERTa's encoder with a Unigram (SentencePiece) vocabulary.
#[test]
fn tiny_xlm_roberta_masked_lm() {
    for target in TARGETS {
        tiny("tiny-xlm-roberta", target);
    }
}

/// DistilBERT: its own tensor names, no segment embeddings.
#[test]
fn tiny_distilbert_masked_lm() {
    for target in TARGETS {
        tiny("tiny-distilbert", target);
    }
}

/// A sequence classifier against the model's logits and transformers' `text-classification` pipeline:
/// single texts and pairs, each alone and all in one padded call; the reranker's scores too.
fn classifier(name: &str, target: Target) {
    let meta = common::golden_json(name);
    let pipeline = Classifier::load(
        ModelFiles::from_dir(&common::fixtures().join(name)).unwrap(),
        target.device(),
    )
    .unwrap();
    let cases: Vec<&Value> = ["single", "pairs"]
        .iter()
        .flat_map(|kind| meta[kind].as_array().unwrap())
        .collect();
    let inputs: Vec<(&str, Option<&str>)> = cases
        .iter()
        .map(|case| (case["text"].as_str().unwrap(), case["text_pair"].as_str()))
        .collect();
    let together = target.run(|| block_on(pipeline.logits(&inputs)).unwrap());
    let labels = pipeline.model.classifier.labels.len();
    let all = target.run(|| block_on(pipeline.classify(&inputs, labels)).unwrap());
    for (i, (case, input)) in cases.iter().zip(&inputs).enumerate() {
        let encoding = match input.1 {
            None => pipeline.tokenizer.encode(input.0).unwrap(),
            Some(pair) => pipeline.tokenizer.encode_pair(input.0, pair).unwrap(),
        };
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(encoding.ids, ids, "{name} ids of input {i}");
        let want = floats(&case["logits"]);
        let alone = target.run(|| block_on(pipeline.logits(&[*input])).unwrap());
        for got in [&alone[0], &together[i]] {
            let diff = max_abs_diff(got, &want);
            println!("{target:?} {name} input {i}: logits max abs diff {diff:.2e}");
            assert!(diff <= TOLERANCE, "{target:?} {name} input {i}: {diff}");
        }
        let expected = case["pipeline"].as_array().unwrap();
        assert_eq!(all[i].len(), expected.len());
        for (got, want) in all[i].iter().zip(expected) {
            assert_eq!(
                got.label,
                want["label"].as_str().unwrap(),
                "{name} input {i}"
            );
            assert!((got.score as f64 - want["score"].as_f64().unwrap()).abs() <= 1e-4);
        }
    }
    if let Some(rerank) = meta.get("rerank") {
        let passages: Vec<String> = rerank["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let query = rerank["query"].as_str().unwrap();
        let ranked =
            target.run(|| block_on(pipeline.rerank(query, &passages, passages.len())).unwrap());
        let want = floats(&rerank["scores"]);
        for r in &ranked {
            assert_eq!(r.text, passages[r.index]);
            assert!(
                (r.score - want[r.index]).abs() <= 1e-4,
                "{name} passage {}",
                r.index
            );
        }
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
        assert_eq!(ranked.iter().map(|r| r.index).collect::<Vec<_>>(), order);
        let top = target.run(|| block_on(pipeline.rerank(query, &passages, 2)).unwrap());
        assert_eq!(top, ranked[..2]);
    }
}

#[test]
fn tiny_bert_sequence_classification_softmax_and_pairs() {
    for target in TARGETS {
        classifier("tiny-bert-cls", target);
    }
}

#[test]
fn tiny_roberta_sequence_classification() {
    for target in TARGETS {
        classifier("tiny-roberta-cls", target);
    }
}

#[test]
fn tiny_distilbert_multi_label_classification_sigmoid() {
    for target in TARGETS {
        classifier("tiny-distilbert-cls", target);
    }
}

/// A cross-encoder (one logit): scores through a sigmoid, passages ranked by them.
#[test]
fn tiny_reranker_scores_and_ranks_passages() {
    for target in TARGETS {
        classifier("tiny-reranker", target);
    }
}

/// sentence-transformers' files choose the pooling and normalisation of every call that does not: here a
/// Pooling module asking for `[CLS]` (all-MiniLM-L6-v2's own is mean) with and without a Normalize module.
#[test]
fn sentence_transformers_modules_set_the_default_pooling() {
    let golden = Golden::open("minilm_golden.safetensors");
    let texts = sentences();
    let dir = common::minilm_dir();
    let cls = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": true}"#;
    let mean = r#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#;
    for (pooling, normalize, key) in [
        (cls, true, "embedding.cls"),
        (mean, false, "embedding.mean_raw"),
    ] {
        let mut modules = vec![
            r#"{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}"#,
            r#"{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}"#,
        ];
        if normalize {
            modules.push(r#"{"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}"#);
        }
        let modules = format!("[{}]", modules.join(","));
        let files = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
            "modules.json" => Ok(Some(modules.clone().into_bytes())),
            "1_Pooling/config.json" => Ok(Some(pooling.as_bytes().to_vec())),
            "sentence_bert_config.json" => Ok(Some(br#"{"max_seq_length": 16}"#.to_vec())),
            name => webbert::io::source::read_optional(&dir.join(name)),
        })
        .unwrap();
        let embedder = Embedder::load(files, Backend::Cpu.device().unwrap()).unwrap();
        let sentence = embedder.sentence;
        assert_eq!(sentence.normalize, normalize);
        // sentence-transformers cuts texts at its max_seq_length, not at the model's 512 positions.
        let long = embedder.tokenizer.encode(&"word ".repeat(40)).unwrap();
        assert_eq!((long.ids.len(), long.truncated), (16, true));
        let rows = block_on(embedder.embed(&texts, sentence.pooling, sentence.normalize)).unwrap();
        let (shape, expected) = golden.get(key);
        for (row, want) in rows.iter().zip(expected.chunks_exact(shape[1])) {
            assert!(max_abs_diff(row, want) <= TOLERANCE, "{key}");
        }
    }
    // A max_seq_length with no room beside a pair's special tokens is refused (`tokenizers` would panic).
    let files = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
        "modules.json" => Ok(Some(
            br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]"#
                .to_vec(),
        )),
        "sentence_bert_config.json" => Ok(Some(br#"{"max_seq_length": 3}"#.to_vec())),
        name => webbert::io::source::read_optional(&dir.join(name)),
    })
    .unwrap();
    let Err(err) = Embedder::load(files, Backend::Cpu.device().unwrap()) else {
        panic!("max_seq_length 3 was accepted");
    };
    assert!(
        err.to_string()
            .contains("texts of at most 3 tokens leave no room beside the 3 special tokens"),
        "{err}"
    );
}

/// A token classifier against its logits and transformers' `token-classification` pipeline, with
/// aggregation `none` and `simple` (entities, scores, words, character offsets).
fn token_classifier(name: &str, target: Target) {
    let meta = common::golden_json(name);
    let pipeline = TokenClassifier::load(
        ModelFiles::from_dir(&common::fixtures().join(name)).unwrap(),
        target.device(),
    )
    .unwrap();
    for case in meta["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let (encoding, logits) = target.run(|| block_on(pipeline.logits(text)).unwrap());
        let ids: Vec<u64> = encoding.ids.iter().map(|&i| i as u64).collect();
        let want_ids: Vec<u64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want_ids, "{name} ids of {text:?}");
        let got: Vec<f32> = logits.concat();
        let want: Vec<f32> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let diff = max_abs_diff(&got, &want);
        println!("{target:?} {name} {text:?}: logits max abs diff {diff:.2e}");
        assert!(diff <= TOLERANCE);
        for (aggregation, key, label) in [
            (Aggregation::None, "none", "entity"),
            (Aggregation::Simple, "simple", "entity_group"),
        ] {
            let entities = target.run(|| block_on(pipeline.entities(text, aggregation)).unwrap());
            let want = case[key].as_array().unwrap();
            assert_eq!(entities.len(), want.len(), "{name} {key} {text:?}");
            for (got, want) in entities.iter().zip(want) {
                let got_label = got.entity.as_ref().or(got.entity_group.as_ref()).unwrap();
                assert_eq!(got_label, want[label].as_str().unwrap(), "{name} {key}");
                assert_eq!(got.word, want["word"].as_str().unwrap(), "{name} {key}");
                assert_eq!(
                    (got.start as u64, got.end as u64),
                    (
                        want["start"].as_u64().unwrap(),
                        want["end"].as_u64().unwrap()
                    )
                );
                assert_eq!(got.index.map(|i| i as u64), want["index"].as_u64());
                assert!((got.score as f64 - want["score"].as_f64().unwrap()).abs() <= 1e-4);
            }
        }
    }
}

#[test]
fn tiny_bert_token_classification() {
    for target in TARGETS {
        token_classifier("tiny-bert-ner", target);
    }
}

#[test]
fn tiny_roberta_token_classification() {
    for target in TARGETS {
        token_classifier("tiny-roberta-ner", target);
    }
}

/// ModernBERT's `head` (dense, GELU, LayerNorm with bias) at every token before the classifier.
#[test]
fn tiny_modernbert_token_classification() {
    for target in TARGETS {
        token_classifier("tiny-modernbert-ner", target);
    }
}

/// Extractive QA against transformers' `question-answering` pipeline: start/end logits, the best answer
/// and the top 3 (scores, character spans widened to words), and a context split into overlapping chunks.
fn question_answerer(name: &str, target: Target) {
    let meta = common::golden_json(name);
    let pipeline = QuestionAnswerer::load(
        ModelFiles::from_dir(&common::fixtures().join(name)).unwrap(),
        target.device(),
    )
    .unwrap();
    let check = |got: &[webbert::Answer], want: &[Value], what: &str| {
        assert_eq!(got.len(), want.len(), "{name} {what}");
        for (got, want) in got.iter().zip(want) {
            assert_eq!(
                got.answer,
                want["answer"].as_str().unwrap(),
                "{name} {what}"
            );
            assert_eq!(
                (got.start as u64, got.end as u64),
                (
                    want["start"].as_u64().unwrap(),
                    want["end"].as_u64().unwrap()
                )
            );
            assert!(
                (got.score as f64 - want["score"].as_f64().unwrap()).abs() <= 1e-5,
                "{name} {what}: score {} vs {}",
                got.score,
                want["score"]
            );
        }
    };
    let defaults = QaOptions::new(pipeline.tokenizer.max_len());
    for case in meta["cases"].as_array().unwrap() {
        let (question, context) = (
            case["question"].as_str().unwrap(),
            case["context"].as_str().unwrap(),
        );
        let (spans, logits) =
            target.run(|| block_on(pipeline.logits(question, context, &defaults)).unwrap());
        assert_eq!(spans.len(), 1);
        let ids: Vec<f32> = spans[0].encoding.ids.iter().map(|&i| i as f32).collect();
        assert_eq!(ids, floats(&case["ids"]), "{name} ids");
        for (got, key) in [
            (&logits[0].start, "start_logits"),
            (&logits[0].end, "end_logits"),
        ] {
            let diff = max_abs_diff(got, &floats(&case[key]));
            println!("{target:?} {name} {key}: max abs diff {diff:.2e}");
            assert!(diff <= TOLERANCE);
        }
        let best = target.run(|| block_on(pipeline.answer(question, context, &defaults)).unwrap());
        check(&best, std::slice::from_ref(&case["top1"]), "top1");
        let top3 = QaOptions {
            top_k: 3,
            ..defaults
        };
        let answers = target.run(|| block_on(pipeline.answer(question, context, &top3)).unwrap());
        check(&answers, case["top3"].as_array().unwrap(), "top3");
    }
    let long = &meta["long"];
    let options = QaOptions {
        top_k: 3,
        max_answer_len: long["max_answer_len"].as_u64().unwrap() as usize,
        max_seq_len: long["max_seq_len"].as_u64().unwrap() as usize,
        doc_stride: long["doc_stride"].as_u64().unwrap() as usize,
    };
    let (question, context) = (
        long["question"].as_str().unwrap(),
        long["context"].as_str().unwrap(),
    );
    let (spans, _) = target.run(|| block_on(pipeline.logits(question, context, &options)).unwrap());
    let chunks: Vec<Vec<u64>> = spans
        .iter()
        .map(|s| s.encoding.ids.iter().map(|&i| i as u64).collect())
        .collect();
    let want: Vec<Vec<u64>> = long["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(chunks, want, "{name} chunks");
    let answers = target.run(|| block_on(pipeline.answer(question, context, &options)).unwrap());
    check(&answers, long["top3"].as_array().unwrap(), "long top3");
}

#[test]
fn tiny_distilbert_question_answering() {
    for target in TARGETS {
        question_answerer("tiny-distilbert-qa", target);
    }
}

#[test]
fn tiny_roberta_question_answering() {
    for target in TARGETS {
        question_answerer("tiny-roberta-qa", target);
    }
}

#[test]
fn tiny_modernbert_question_answering() {
    for target in TARGETS {
        question_answerer("tiny-modernbert-qa", target);
    }
}

/// ALBERT: narrow embeddings projected up, one layer's weights shared by every layer, a Unigram vocabulary
/// with `[MASK]`.
/// The rest of the architecture × head matrix (`reference.py --part matrix`): NER and QA for the families whose
/// other fixtures have none (each family's own names, tokenizer offsets and inputs), and XLM-R's classifier.
#[test]
fn every_family_tags_entities_and_answers_questions() {
    for target in TARGETS {
        for family in ["xlm-roberta", "distilbert", "albert", "electra", "mpnet"] {
            token_classifier(&format!("tiny-{family}-ner"), target);
        }
        for family in ["bert", "xlm-roberta", "albert", "electra", "mpnet"] {
            question_answerer(&format!("tiny-{family}-qa"), target);
        }
        classifier("tiny-xlm-roberta-cls", target);
    }
}

#[test]
fn tiny_albert_masked_lm_and_classifier() {
    for target in TARGETS {
        tiny("tiny-albert", target);
        classifier("tiny-albert-cls", target);
    }
}

/// ELECTRA: the generator's fill-mask (narrow embeddings, its own head) and the discriminator's classifier.
#[test]
fn tiny_electra_generator_and_classifier() {
    for target in TARGETS {
        tiny("tiny-electra-generator", target);
        classifier("tiny-electra-cls", target);
    }
}

/// A masked LM's encoder as a sentence embedder: each sentence's last hidden state alone, then all of them
/// in one padded call pooled as its sentence-transformers files declare (mean, normalised).
fn sentence_embeddings(name: &str, target: Target) {
    let golden = Golden::open(&format!("{name}_golden.safetensors"));
    let meta: Value = common::golden_json(name);
    let sentences = common::strings(&meta["sentences"]);
    let files = ModelFiles::from_dir(&common::fixtures().join(name)).unwrap();
    let embedder = Embedder::load(files, target.device()).unwrap();
    assert_eq!(
        (embedder.sentence.pooling, embedder.sentence.normalize),
        (Pooling::Mean, true)
    );
    for (i, text) in sentences.iter().enumerate() {
        let encoding = embedder.tokenizer.encode(text).unwrap();
        let batch = Batch::new(&[encoding], embedder.pad_id, &embedder.device);
        let hidden = target.run(|| read(embedder.model.forward(&batch)));
        let diff = max_abs_diff(&hidden, &golden.get(&format!("hidden.{i}")).1);
        println!("{target:?} {name} hidden.{i}: max abs diff {diff:.2e}");
        assert!(diff <= TOLERANCE);
    }
    let sentence = embedder.sentence;
    let rows = target.run(|| {
        block_on(embedder.embed(&sentences, sentence.pooling, sentence.normalize)).unwrap()
    });
    let (shape, expected) = golden.get("embedding.mean");
    for (row, want) in rows.iter().zip(expected.chunks_exact(shape[1])) {
        assert!(cosine(row, want) >= 0.99999);
        assert!(max_abs_diff(row, want) <= TOLERANCE);
    }
}

/// MPNet (all-mpnet-base-v2's architecture): the relative position bias in every layer (a long text reaches
/// the logarithmic buckets), `<mask>` chosen over the vocabulary's plain `[MASK]`, sentence embeddings as
/// its sentence-transformers files declare them (mean, normalised), and its classifier.
#[test]
fn tiny_mpnet_masked_lm_embeddings_and_classifier() {
    for target in TARGETS {
        tiny("tiny-mpnet", target);
        classifier("tiny-mpnet-cls", target);
        sentence_embeddings("tiny-mpnet", target);
    }
}

/// DeBERTa-v3's architecture: c2p and p2c scores from relative position embeddings (normalised, projected by
/// each layer's own query and key weights; a long text reaches every log bucket), no absolute positions nor
/// segments; fill-mask and sentence embeddings in one padded batch. The classifier (first token, dense, GELU)
/// has the other options: absolute positions and segments, c2p alone, unbucketed distances clamped at 24, the
/// table not normalised. NER and QA on the v3 options.
#[test]
fn tiny_deberta_v2_masked_lm_embeddings_and_heads() {
    for target in TARGETS {
        tiny("tiny-deberta-v2", target);
        sentence_embeddings("tiny-deberta-v2", target);
        classifier("tiny-deberta-v2-cls", target);
        token_classifier("tiny-deberta-v2-ner", target);
        question_answerer("tiny-deberta-v2-qa", target);
    }
}

/// DeBERTa's other masked-LM head, `lm_predictions.lm_head.*` (`legacy: false`; the Hub's v3 checkpoints carry
/// it): tiny-deberta-v2's head under those names gives transformers' logits, its decoder the word embeddings.
/// With `legacy` true the same file lacks `cls.predictions.*`, and the error says so.
#[test]
fn deberta_v2_lm_predictions_head() {
    let dir = common::fixtures().join("tiny-deberta-v2");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let bytes = read("model.safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let name = name
                .replace("cls.predictions.transform.", "lm_predictions.lm_head.")
                .replace("cls.predictions.bias", "lm_predictions.lm_head.bias");
            (name, view)
        })
        .collect();
    let bytes = safetensors::serialize(renamed, None).unwrap();
    let config = String::from_utf8(read("config.json")).unwrap();
    assert!(config.contains(r#""legacy": true"#));
    let files = |config: &str| {
        let checkpoint = Checkpoint::from_safetensors(bytes.clone()).unwrap();
        ModelFiles::new(
            config,
            TokenizerFiles::Json(read("tokenizer.json")),
            checkpoint,
        )
        .unwrap()
    };
    let err = FillMask::load(files(&config), Backend::Cpu.device().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cls.predictions.transform.dense.weight"),
        "{err}"
    );

    let config = config.replace(r#""legacy": true"#, r#""legacy": false"#);
    let pipeline = FillMask::load(files(&config), Backend::Cpu.device().unwrap()).unwrap();
    let golden = Golden::open("tiny-deberta-v2_golden.safetensors");
    let meta = common::golden_json("tiny-deberta-v2");
    for (i, text) in common::strings(&meta["texts"]).iter().enumerate() {
        let encoding = pipeline.tokenizer.encode(text).unwrap();
        let batch = Batch::new(&[encoding], 0, &pipeline.device);
        let logits = self::read(pipeline.model.forward(&batch));
        let diff = max_abs_diff(&logits, &golden.get(&format!("logits.{i}")).1);
        assert!(diff <= TOLERANCE, "text {i}: {diff}");
    }
}

/// ModernBERT (answerdotai/ModernBERT-base's architecture): rotary positions (one base in global layers,
/// another in local ones), pre-norm layers (the first with no norm before attention) and a final norm, GeGLU,
/// global and local layers alternating, the local ones seeing 4 tokens on either side (every text but "[MASK]" is
/// longer), no biases but the decoder's. Every layer's hidden states and attention probabilities, fill-mask,
/// sentence embeddings in one padded batch; and its classifier, with every bias and the mean of the tokens, alone
/// and batched, then with `classifier_pooling` "cls".
#[test]
fn tiny_modernbert_masked_lm_hidden_states_embeddings_and_classifier() {
    let golden = Golden::open("tiny-modernbert_golden.safetensors");
    let meta: Value = common::golden_json("tiny-modernbert");
    let sentences = common::strings(&meta["sentences"]);
    let cls_dir = common::fixtures().join("tiny-modernbert-cls");
    let cls_meta: Value = common::golden_json("tiny-modernbert-cls");
    let config = std::fs::read_to_string(cls_dir.join("config.json")).unwrap();
    let cls_config = config.replace(
        r#""classifier_pooling": "mean""#,
        r#""classifier_pooling": "cls""#,
    );
    assert_ne!(config, cls_config);
    for target in TARGETS {
        tiny("tiny-modernbert", target);
        classifier("tiny-modernbert-cls", target);
        let files = ModelFiles::from_dir(&common::fixtures().join("tiny-modernbert")).unwrap();
        let embedder = Embedder::load(files, target.device()).unwrap();
        assert_eq!(
            (embedder.sentence.pooling, embedder.sentence.normalize),
            (Pooling::Mean, true)
        );
        let mut worst = 0.0f32;
        for (i, text) in sentences.iter().enumerate() {
            let encoding = embedder.tokenizer.encode(text).unwrap();
            let ids: Vec<u64> = encoding.ids.iter().map(|&id| id as u64).collect();
            let want_ids: Vec<u64> = meta["sentence_ids"][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap())
                .collect();
            assert_eq!(ids, want_ids, "ids of {text:?}");
            let batch = Batch::new(&[encoding], embedder.pad_id, &embedder.device);
            // The embeddings, layers 0 to 2, and the last hidden state (layer 3, then the final norm).
            let states = target.run(|| {
                let states = embedder.model.hidden_states(&batch);
                states.into_iter().map(read).collect::<Vec<_>>()
            });
            assert_eq!(states.len(), 5);
            for (n, state) in states.iter().enumerate() {
                let diff = max_abs_diff(state, &golden.get(&format!("hidden.{i}.{n}")).1);
                worst = worst.max(diff);
                assert!(diff <= TOLERANCE, "{target:?} hidden.{i}.{n}: {diff}");
            }
            // The fused attention of the global layers (forward) and burn's ops (with the probabilities); the
            // local layers' queries in chunks of 8 (scores under 2 KiB), each over its window's 16 keys.
            let want = &golden.get(&format!("hidden.{i}")).1;
            let (last, attentions) = target.run(|| {
                let (last, attentions) = embedder.model.forward_with_attentions(&batch);
                (
                    read(embedder.model.forward(&batch)),
                    (read(last), attentions.len()),
                )
            });
            let chunked = target
                .run(|| with_window_scores_bytes(2048, || read(embedder.model.forward(&batch))));
            assert_eq!(attentions.1, 4);
            for got in [&last, &attentions.0, &chunked] {
                let diff = max_abs_diff(got, want);
                worst = worst.max(diff);
                assert!(diff <= TOLERANCE, "{target:?} hidden.{i}: {diff}");
            }
        }
        println!("{target:?} tiny-modernbert hidden states: max abs diff {worst:.2e}");
        let last = sentences.len() - 1;
        let maps = target.run(|| block_on(embedder.attention(&sentences[last])).unwrap());
        let [heads, seq] = [maps.num_heads, maps.tokens.len()];
        assert_eq!((maps.num_layers, heads), (4, 4));
        for (n, layer) in maps.weights.chunks_exact(heads * seq * seq).enumerate() {
            let diff = max_abs_diff(layer, &golden.get(&format!("attention.{last}.{n}")).1);
            println!("{target:?} tiny-modernbert attention.{last}.{n}: max abs diff {diff:.2e}");
            assert!(diff <= TOLERANCE);
        }
        let sentence = embedder.sentence;
        let embed = || block_on(embedder.embed(&sentences, sentence.pooling, sentence.normalize));
        // One padded batch, its local layers' queries in one chunk, then in chunks of 4.
        let whole = target.run(|| embed().unwrap());
        let chunked = target.run(|| with_window_scores_bytes(4096, || embed().unwrap()));
        let (shape, expected) = golden.get("embedding.mean");
        for rows in [whole, chunked] {
            for (row, want) in rows.iter().zip(expected.chunks_exact(shape[1])) {
                let (cos, diff) = (cosine(row, want), max_abs_diff(row, want));
                println!(
                    "{target:?} tiny-modernbert embedding: cosine {cos:.8}, max abs diff {diff:.2e}"
                );
                assert!(cos >= 0.99999 && diff <= TOLERANCE);
            }
        }

        // The same classifier reading the first token's vector.
        let files = ModelFiles::from_lookup(WeightsDtype::Fp32, |name| match name {
            "config.json" => Ok(Some(cls_config.clone().into_bytes())),
            name => webbert::io::source::read_optional(&cls_dir.join(name)),
        })
        .unwrap();
        let pipeline = Classifier::load(files, target.device()).unwrap();
        let cases: Vec<&Value> = ["single", "pairs"]
            .iter()
            .flat_map(|kind| cls_meta[kind].as_array().unwrap())
            .collect();
        let inputs: Vec<(&str, Option<&str>)> = cases
            .iter()
            .map(|case| (case["text"].as_str().unwrap(), case["text_pair"].as_str()))
            .collect();
        let together = target.run(|| block_on(pipeline.logits(&inputs)).unwrap());
        for (i, (case, got)) in cases.iter().zip(&together).enumerate() {
            let diff = max_abs_diff(got, &floats(&case["logits_cls_pooling"]));
            println!(
                "{target:?} tiny-modernbert-cls, cls pooling, input {i}: max abs diff {diff:.2e}"
            );
            assert!(diff <= TOLERANCE, "{target:?} input {i}: {diff}");
        }
    }
}

/// The int8 variant (blocks of 32, f32 scales): a little over a quarter of the bytes, all-MiniLM-L6-v2's
/// embeddings within the q8 guard of PyTorch's f32, the shipped fill-mask model's top-1 unchanged. On
/// the GPU the weights (the word table too) stay int8, unpacked by both kernel shapes: under 30% of the
/// f32 weights' memory, and the embeddings match the CPU's (which widens the same weights at load) to
/// float rounding.
#[test]
fn q8_variant_keeps_embeddings_and_fill_mask() {
    let out = std::env::temp_dir().join(format!("webbert-q8-{}", std::process::id()));
    let device = Backend::Cpu.device().unwrap();
    let report =
        webbert::io::quantize::quantize(&common::minilm_dir(), &out, WeightsDtype::Q8, &device)
            .unwrap();
    println!("all-MiniLM-L6-v2 q8: {report:?}");
    assert!(report.bytes * 10 <= report.original_bytes * 3);
    assert!(report.min_cosine >= webbert::io::quantize::Q8_MIN_COSINE);
    variant_on_every_target(&out, WeightsDtype::Q8, 0.999, |dtype| {
        matches!(dtype, burn::tensor::DType::QFloat(_))
    });
    let f32_bytes = gpu_weight_bytes(&common::minilm_dir(), WeightsDtype::Fp32);
    let q8_bytes = gpu_weight_bytes(&out, WeightsDtype::Q8);
    println!("all-MiniLM-L6-v2 on the GPU: {f32_bytes} bytes of weights in f32, {q8_bytes} in q8");
    // The word table int8 too: widened, it alone was 52% of the f32 weights.
    assert!(
        q8_bytes * 100 <= f32_bytes * 30,
        "{q8_bytes} of {f32_bytes}"
    );
    std::fs::remove_dir_all(&out).unwrap();

    let dir = common::minilm_dir().with_file_name("minilm-l6-mlm");
    let meta: Value = common::golden_json("minilm-l6-mlm");
    let f32_files = ModelFiles::from_dir(&dir).unwrap();
    let q8 = f32_files.checkpoint.to_q8().unwrap();
    let q8_files = ModelFiles::from_lookup(WeightsDtype::Q8, |name| match name {
        "model.q8.safetensors" => Ok(Some(q8.clone())),
        name => webbert::io::source::read_optional(&dir.join(name)),
    })
    .unwrap();
    let pipeline = FillMask::load(q8_files, device).unwrap();
    for (text, want) in meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(meta["fill_mask"].as_array().unwrap())
    {
        let got = block_on(pipeline.predict(text.as_str().unwrap(), 5)).unwrap();
        assert_eq!(
            got.masks[0][0].token_id as u64,
            want[0]["token_id"].as_u64().unwrap(),
            "{text}"
        );
    }
}
