//! Native bench: the browser bench's cases on burn's CPU backend and on wgpu (lavapipe here, or a real GPU).
//! `cargo bench --bench native` (after `scripts/setup.sh`, which assembles www/models/minilm-l6-mlm for fill-mask).
//! Prints median [min–max] ms, the FLOPs of each case and the achieved GFLOP/s; writes bench-native.json.

use std::path::Path;
use std::time::Instant;

use webbert::{Backend, BertConfig, Embedder, FillMask, ModelFiles, Pooling};

const WORDS: [&str; 13] = [
    "the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "ran", "in", "the", "park",
];

/// Exactly `n` tokens with [CLS] and [SEP] (every word is one token); `mask` puts [MASK] in the middle.
fn text(n: usize, mask: bool) -> String {
    let mut words: Vec<&str> = (0..n - 2).map(|i| WORDS[i % WORDS.len()]).collect();
    if mask {
        let middle = words.len() / 2;
        words[middle] = "[MASK]";
    }
    words.join(" ")
}

/// Multiply-adds ×2 of one forward: Q/K/V/output projections, QKᵀ and PV, feed-forward; the MLM head on
/// the masked token only (as the pipeline does).
fn flops(c: &BertConfig, batch: usize, seq: usize, mlm: bool) -> f64 {
    let (h, i, tokens) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        (batch * seq) as f64,
    );
    let per_layer =
        2.0 * tokens * (4.0 * h * h + 2.0 * h * i) + 4.0 * batch as f64 * (seq * seq) as f64 * h;
    c.num_hidden_layers as f64 * per_layer
        + if mlm {
            2.0 * (h * h + h * c.vocab_size as f64)
        } else {
            0.0
        }
}

fn time(mut run: impl FnMut()) -> Vec<f64> {
    let start = Instant::now();
    run(); // warm-up: kernel compilation, autotuning
    let warm = start.elapsed().as_secs_f64();
    let runs = if warm > 3.0 { 3 } else { 10 };
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models");
    let mut rows = Vec::new();
    for backend in [Backend::Cpu, Backend::Wgpu] {
        let device = match backend.device() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{backend:?}: {e}");
                continue;
            }
        };
        let files = ModelFiles::from_dir(&models.join("all-MiniLM-L6-v2"))
            .expect("run scripts/fetch-model.sh");
        let config = files.config.clone();
        let embedder = Embedder::load(files, device.clone()).unwrap();
        for (batch, seq) in [(1, 16), (1, 128), (1, 512), (8, 128)] {
            let texts = vec![text(seq, false); batch];
            let times = time(|| {
                pollster::block_on(embedder.embed(&texts, Pooling::Mean, true)).unwrap();
            });
            rows.push((
                backend,
                format!("embed {batch}×{seq}"),
                times,
                flops(&config, batch, seq, false),
            ));
        }
        match ModelFiles::from_dir(&models.join("minilm-l6-mlm")) {
            Ok(files) => {
                let fill = FillMask::load(files, device.clone()).unwrap();
                for seq in [16, 128] {
                    let input = text(seq, true);
                    let times = time(|| {
                        pollster::block_on(fill.predict(&input, 5)).unwrap();
                    });
                    rows.push((
                        backend,
                        format!("fill-mask {seq}"),
                        times,
                        flops(&config, 1, seq, true),
                    ));
                }
            }
            Err(e) => {
                eprintln!(
                    "fill-mask skipped ({e}): `scripts/setup.sh` assembles www/models/minilm-l6-mlm"
                )
            }
        }
    }

    println!("| backend | case | ms median [min–max] | GFLOP | GFLOP/s |");
    println!("| --- | --- | --- | --- | --- |");
    let mut json = Vec::new();
    for (backend, case, mut times, flop) in rows {
        times.sort_by(f64::total_cmp);
        let (median, min, max) = (times[times.len() / 2], times[0], times[times.len() - 1]);
        let gflops = flop / 1e9 / (median / 1e3);
        println!(
            "| {backend:?} | {case} | {median:.1} [{min:.1}–{max:.1}] ({} runs) | {:.2} | {gflops:.1} |",
            times.len(),
            flop / 1e9
        );
        json.push(serde_json::json!({"backend": format!("{backend:?}"), "case": case, "median_ms": median,
            "min_ms": min, "max_ms": max, "runs": times.len(), "gflop": flop / 1e9, "gflops": gflops}));
    }
    std::fs::write(
        "bench-native.json",
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}
