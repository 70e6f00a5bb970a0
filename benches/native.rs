//! Native bench: the browser bench's cases on burn's CPU backend and on wgpu (lavapipe here, or a real GPU).
//! `cargo bench --bench native` (after `scripts/setup.sh`, which assembles www/models/minilm-l6-mlm for fill-mask).
//! Prints median [min–max] ms, the FLOPs of each case and the achieved GFLOP/s (and tokens/s); writes
//! bench-native.json. Environment:
//! - `WEBBERT_MODELS=DIR`: where `all-MiniLM-L6-v2/` and `minilm-l6-mlm/` are (default: www/models of
//!   the checkout it was built in), so the binary runs on another machine;
//! - `BENCH_BACKENDS=cpu,wgpu` (both by default); `BENCH_CASES=embed,fill,batch` (all by default);
//! - `BENCH_KERNELS=1`: also each GPU kernel alone, both shapes ([`KernelShape`]), timed by the device's
//!   own clock, with its GFLOP/s or GB/s (written to bench-kernels.json);
//! - `BENCH_TILES=1`: also the tiled Linear at 1,024, 4,096 and 8,192 rows in every candidate tile and
//!   depth split ([`TILES`], [`LARGE_TILE`], [`TRIAL_TILES`]), against the one [`plan`] chooses (`BENCH_CASES=none` skips the cases);
//! - `WEBBERT_KERNELS=serial|tiled|tiled-subgroups` forces one kernel shape for the whole run.

use std::path::PathBuf;
use std::time::Instant;

use burn::nn::LayerNormConfig;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use webbert::ops::linear::{LARGE_TILE, Plan, TILES, TRIAL_TILES, plan, with_plan};
use webbert::ops::{KernelShape, with_kernel_shape};
use webbert::{Backend, BertConfig, Embedder, FillMask, ModelFiles, Pooling, ops};

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
    run(); // warm-up: kernel compilation
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

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_string)
        .collect()
}

struct Row {
    backend: Backend,
    case: String,
    times: Vec<f64>,
    flop: f64,
    tokens: usize,
}

fn main() {
    let models = std::env::var_os("WEBBERT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("www/models"));
    let cases = env_list("BENCH_CASES", "embed,fill,batch");
    // Without a case (`BENCH_CASES=none`, for the kernel tables alone) no model is loaded.
    let any_case = ["embed", "fill", "batch"]
        .iter()
        .any(|c| cases.iter().any(|x| x == c));
    let backends = match any_case {
        true => env_list("BENCH_BACKENDS", "cpu,wgpu"),
        false => Vec::new(),
    };
    let mut rows = Vec::new();
    for backend in backends {
        let backend: Backend = backend.parse().expect("BENCH_BACKENDS: cpu or wgpu");
        let device = match backend.device() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{backend:?}: {e}");
                continue;
            }
        };
        let files = ModelFiles::from_dir(&models.join("all-MiniLM-L6-v2"))
            .expect("run scripts/fetch-model.sh, or set WEBBERT_MODELS");
        let config = files.config.clone();
        let embedder = Embedder::load(files, device.clone()).unwrap();
        let mut shapes = Vec::new();
        if cases.iter().any(|c| c == "embed") {
            shapes.extend([(1, 16), (1, 128), (1, 512), (8, 128)]);
        }
        if cases.iter().any(|c| c == "batch") {
            shapes.extend([(64, 128), (256, 128)]);
        }
        for (batch, seq) in shapes {
            let texts = vec![text(seq, false); batch];
            let times = time(|| {
                pollster::block_on(embedder.embed(&texts, Pooling::Mean, true)).unwrap();
            });
            rows.push(Row {
                backend,
                case: format!("embed {batch}×{seq}"),
                times,
                flop: flops(&config, batch, seq, false),
                tokens: batch * seq,
            });
        }
        if !cases.iter().any(|c| c == "fill") {
            continue;
        }
        match ModelFiles::from_dir(&models.join("minilm-l6-mlm")) {
            Ok(files) => {
                let fill = FillMask::load(files, device.clone()).unwrap();
                for seq in [16, 128] {
                    let input = text(seq, true);
                    let times = time(|| {
                        pollster::block_on(fill.predict(&input, 5)).unwrap();
                    });
                    rows.push(Row {
                        backend,
                        case: format!("fill-mask {seq}"),
                        times,
                        flop: flops(&config, 1, seq, true),
                        tokens: seq,
                    });
                }
            }
            Err(e) => {
                eprintln!(
                    "fill-mask skipped ({e}): `scripts/setup.sh` assembles www/models/minilm-l6-mlm"
                )
            }
        }
    }

    println!("| backend | case | ms median [min–max] | GFLOP | GFLOP/s | tokens/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut json = Vec::new();
    for Row {
        backend,
        case,
        mut times,
        flop,
        tokens,
    } in rows
    {
        times.sort_by(f64::total_cmp);
        let (median, min, max) = (times[times.len() / 2], times[0], times[times.len() - 1]);
        let gflops = flop / 1e9 / (median / 1e3);
        let tokens_per_s = tokens as f64 / (median / 1e3);
        println!(
            "| {backend:?} | {case} | {median:.1} [{min:.1}–{max:.1}] ({} runs) | {:.2} | {gflops:.1} | {tokens_per_s:.0} |",
            times.len(),
            flop / 1e9
        );
        json.push(serde_json::json!({"backend": format!("{backend:?}"), "case": case, "median_ms": median,
            "min_ms": min, "max_ms": max, "runs": times.len(), "gflop": flop / 1e9, "gflops": gflops,
            "tokens_per_s": tokens_per_s}));
    }
    std::fs::write(
        "bench-native.json",
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();

    if std::env::var("BENCH_PHASES").is_ok_and(|v| v == "1") {
        phases(&models);
    }
    if std::env::var("BENCH_KERNELS").is_ok_and(|v| v == "1") {
        kernels();
    }
    if std::env::var("BENCH_TILES").is_ok_and(|v| v == "1") {
        tiles();
    }
}

/// Where the wall time of an embedding call goes on wgpu: tokenizing, building the padded batch on the
/// device, submitting the forward (CPU time only: the GPU runs behind), and waiting for the result.
fn phases(models: &std::path::Path) {
    let device = Backend::Wgpu.device().expect("a wgpu adapter");
    let embedder = Embedder::load(
        ModelFiles::from_dir(&models.join("all-MiniLM-L6-v2")).unwrap(),
        device.clone(),
    )
    .unwrap();
    println!("\n| embed (wgpu) | tokenize ms | batch ms | submit ms | wait + read ms | total ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (batch, seq) in [(1, 16), (1, 128), (1, 512), (8, 128), (32, 128)] {
        let texts = vec![text(seq, false); batch];
        let mut spans = vec![Vec::new(); 5];
        for run in 0..11 {
            let t0 = Instant::now();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let encodings = embedder.tokenizer.encode_all(&texts).unwrap();
            let t1 = Instant::now();
            let padded = webbert::model::Batch::new(&encodings, embedder.pad_id, &device);
            let t2 = Instant::now();
            let hidden = embedder.model.forward(&padded);
            let pooled =
                webbert::model::heads::pool(hidden, padded.attention_mask, Pooling::Mean, true);
            let t3 = Instant::now();
            pooled.into_data();
            let t4 = Instant::now();
            if run > 0 {
                for (span, (a, b)) in
                    spans
                        .iter_mut()
                        .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t0, t4)])
                {
                    span.push((b - a).as_secs_f64() * 1e3);
                }
            }
        }
        let cells: Vec<String> = spans
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                format!("{:.2}", v[v.len() / 2])
            })
            .collect();
        println!("| {batch}×{seq} | {} |", cells.join(" | "));
    }
}

/// MiniLM's four products per layer, `(name, cols, depth, gelu)`: QKV and the first feed-forward Linear
/// stand alone; the output projections come with their Add & Norm, which in the tiled shape adds their
/// partial sums (a depth split costs no dispatch).
fn products(hidden: usize, intermediate: usize) -> [(&'static str, usize, usize, bool); 4] {
    [
        ("Linear QKV", 3 * hidden, hidden, false),
        (
            "Linear + Add & Norm, attention output",
            hidden,
            hidden,
            false,
        ),
        ("Linear FFN up + GELU", intermediate, hidden, true),
        ("Linear + Add & Norm, FFN down", hidden, intermediate, false),
    ]
}

/// One of [`products`] on random values, run as a layer runs it.
struct Product<'a> {
    x: Tensor<2>,
    layer: burn::nn::Linear,
    norm: &'a burn::nn::LayerNorm,
    residual: Tensor<3>,
    gelu: bool,
}

impl<'a> Product<'a> {
    fn new(
        device: &Device,
        norm: &'a burn::nn::LayerNorm,
        [rows, cols, depth]: [usize; 3],
        gelu: bool,
    ) -> Self {
        let random = |shape: [usize; 2]| {
            Tensor::<2>::random(shape, Distribution::Uniform(-1.0, 1.0), device)
        };
        let layer = burn::nn::Linear {
            weight: burn::module::Param::from_tensor(random([depth, cols])),
            bias: Some(burn::module::Param::from_tensor(
                random([1, cols]).reshape([cols]),
            )),
        };
        let residual = random([rows, cols]).reshape([1, rows, cols]);
        Self {
            x: random([rows, depth]),
            layer,
            norm,
            residual,
            gelu,
        }
    }

    /// Whether the Add & Norm comes with it: its output is `hidden` wide.
    fn with_norm(&self) -> bool {
        self.layer.weight.dims()[1] == self.norm.gamma.dims()[0]
    }

    fn run(&self) {
        if self.with_norm() {
            let [rows, depth] = self.x.dims();
            let input = self.x.clone().reshape([1, rows, depth]);
            ops::add_norm::dense_add_norm(
                &self.layer,
                self.norm,
                1e-12,
                input,
                self.residual.clone(),
            );
        } else {
            let bias = self.layer.bias.as_ref().map(|b| b.val());
            ops::linear::affine(self.x.clone(), self.layer.weight.val(), bias, self.gelu);
        }
    }
}

/// The device's own time of one launch of `f`, in µs: 20 launches timed after one that compiles.
fn device_micros(device: &Device, f: &(dyn Fn() + Sync)) -> f64 {
    const LAUNCHES: usize = 20;
    f();
    let (_, duration) = device
        .profile(|| {
            for _ in 0..LAUNCHES {
                f();
            }
        })
        .expect("the device can profile");
    let ticks = pollster::block_on(duration.resolve()).expect("a measurement");
    ticks.duration().as_secs_f64() * 1e6 / LAUNCHES as f64
}

/// MiniLM's four products at many rows, in every candidate tile and split, on the tiled shape: which
/// layout [`plan`] should choose where rows are plenty. Written to bench-tiles.json.
fn tiles() {
    let device = Backend::Wgpu.device().expect("a wgpu adapter");
    let (hidden, intermediate) = (384, 1536);
    let norm = LayerNormConfig::new(hidden).init(&device);
    let mut table = Vec::new();
    println!("\n| product | tile (unit) | depth in | µs per launch | TFLOP/s | planned |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for tokens in [1024, 4096, 8192] {
        for (name, cols, depth, gelu) in products(hidden, intermediate) {
            let product = Product::new(&device, &norm, [tokens, cols, depth], gelu);
            let (with_norm, run) = (product.with_norm(), || product.run());
            let chosen = plan(tokens, cols, depth);
            // Only the norm after a product adds up depth slices; a finished product runs in one.
            let splits: &[usize] = if with_norm { &[1, 2, 4, 8] } else { &[1] };
            for &tile in TILES.iter().chain([&LARGE_TILE]).chain(&TRIAL_TILES) {
                for &splits in splits {
                    if depth.div_ceil(splits) < tile.depth {
                        continue;
                    }
                    let plan = Plan { tile, splits };
                    let micros = with_kernel_shape(KernelShape::Tiled { subgroups: false }, || {
                        with_plan(plan, || device_micros(&device, &run))
                    });
                    let tflops = 2.0 * (tokens * cols * depth) as f64 / micros / 1e6;
                    let planned = plan == chosen || (!with_norm && tile == chosen.tile);
                    let (r, c, d, ur, uc) = (
                        tile.rows,
                        tile.cols,
                        tile.depth,
                        tile.unit_rows,
                        tile.unit_cols,
                    );
                    println!(
                        "| {name} {tokens}×{cols}×{depth} | {r}×{c}×{d} ({ur}×{uc}) | {splits} | \
                         {micros:.1} | {tflops:.1} | {} |",
                        if planned { "yes" } else { "" }
                    );
                    table.push(
                        serde_json::json!({"product": name, "rows": tokens, "cols": cols,
                        "depth": depth, "tile": [r, c, d], "unit": [ur, uc], "splits": splits,
                        "us": micros, "tflops": tflops, "planned": planned}),
                    );
                }
            }
        }
    }
    std::fs::write(
        "bench-tiles.json",
        serde_json::to_string_pretty(&table).unwrap(),
    )
    .unwrap();
}

/// What one launch of a kernel does, for its achieved rate.
enum Work {
    Gflop(f64),
    Gbytes(f64),
}

/// Each GPU kernel alone on MiniLM's shapes, in both kernel shapes, timed by the device clock
/// ([`device_micros`]).
fn kernels() {
    let device = Backend::Wgpu.device().expect("a wgpu adapter");
    let (hidden, heads, intermediate, vocab) = (384, 12, 1536, 30522);
    let random =
        |shape: [usize; 2]| Tensor::<2>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
    let time = |f: &(dyn Fn() + Sync)| device_micros(&device, f);
    let mut table = Vec::new();
    // `tiled` names the tiled kernel's layout, where it has a choice.
    let mut measure = |kernel: String, run: &(dyn Fn() + Sync), work: Work, tiled: &str| {
        for shape in [KernelShape::Serial, KernelShape::Tiled { subgroups: false }] {
            let micros = with_kernel_shape(shape, || time(run));
            let rate = match work {
                Work::Gflop(g) => format!("{:.0} GFLOP/s", g / micros * 1e6),
                Work::Gbytes(g) => format!("{:.0} GB/s", g / micros * 1e6),
            };
            let label = match shape {
                KernelShape::Serial => "serial".to_string(),
                KernelShape::Tiled { .. } => format!("tiled{tiled}"),
            };
            println!("| {kernel} | {label} | {micros:.1} | {rate} |");
            table.push(
                serde_json::json!({"kernel": kernel, "shape": label, "us": micros, "rate": rate}),
            );
        }
    };
    println!("\n| kernel | shape | µs per launch | achieved |\n| --- | --- | --- | --- |");
    for tokens in [16, 128, 512, 1024, 8192] {
        let norm = LayerNormConfig::new(hidden).init(&device);
        for (name, cols, depth, gelu) in products(hidden, intermediate) {
            let product = Product::new(&device, &norm, [tokens, cols, depth], gelu);
            let (with_norm, run) = (product.with_norm(), || product.run());
            let chosen = plan(tokens, cols, depth);
            let splits = if with_norm { chosen.splits } else { 1 };
            let layout = format!(
                " ({}×{} tile, depth in {splits})",
                chosen.tile.rows, chosen.tile.cols
            );
            let gflop = 2.0 * (tokens * cols * depth) as f64 / 1e9;
            measure(
                format!("{name} {tokens}×{cols}×{depth}"),
                &run,
                Work::Gflop(gflop),
                &layout,
            );
        }
        let (x, r) = (random([tokens, hidden]), random([tokens, hidden]));
        let (x, r) = (
            x.reshape([1, tokens, hidden]),
            r.reshape([1, tokens, hidden]),
        );
        let add_norm = || {
            ops::add_norm::add_norm(&norm, 1e-12, x.clone(), r.clone());
        };
        let bytes = (3 * tokens * hidden * 4) as f64 / 1e9;
        measure(
            format!("add_norm {tokens}×{hidden}"),
            &add_norm,
            Work::Gbytes(bytes),
            "",
        );
        let (batch, seq) = if tokens >= 1024 {
            (tokens / 128, 128)
        } else {
            (1, tokens)
        };
        let ids: Vec<i64> = (0..tokens as i64).map(|i| i * 7 % vocab as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), &device);
        let types = Tensor::<2, Int>::zeros([batch, seq], &device);
        let (word, position, token_type) = (
            random([vocab, hidden]),
            random([512, hidden]),
            random([2, hidden]),
        );
        let embed = || {
            ops::embeddings::embed_norm(
                ids.clone(),
                types.clone(),
                word.clone(),
                Some(position.clone()),
                Some(token_type.clone()),
                norm.gamma.val(),
                norm.beta.as_ref().map(|beta| beta.val()),
                1e-12,
            );
        };
        let bytes = (4 * tokens * hidden * 4) as f64 / 1e9;
        measure(
            format!("embeddings {batch}×{seq}"),
            &embed,
            Work::Gbytes(bytes),
            "",
        );
        let uniform = Distribution::Uniform(-1.0, 1.0);
        let qkv = Tensor::<3>::random([batch, seq, 3 * hidden], uniform, &device);
        let mask = Tensor::<2>::ones([batch, seq], &device);
        let attention = || {
            let scores = ops::attention::Scores::plain(hidden / heads);
            ops::attention::self_attention(qkv.clone(), mask.clone(), None, heads, scores);
        };
        let gflop = 4.0 * (batch * seq * seq * hidden) as f64 / 1e9;
        measure(
            format!("attention {batch}×{seq}"),
            &attention,
            Work::Gflop(gflop),
            "",
        );
        let states = Tensor::<3>::random([batch, seq, hidden], uniform, &device);
        let pool = || {
            ops::pool::pool(states.clone(), mask.clone(), true, true);
        };
        let bytes = (tokens * hidden * 4) as f64 / 1e9;
        measure(
            format!("pool {batch}×{seq}"),
            &pool,
            Work::Gbytes(bytes),
            "",
        );
    }
    // The fill-mask head on one masked row: the tied decoder reads the embeddings transposed.
    let (x, embeddings, bias) = (
        random([1, hidden]),
        random([vocab, hidden]),
        random([1, vocab]),
    );
    let bias = bias.reshape([vocab]);
    let decoder = || {
        ops::linear::affine(
            x.clone(),
            embeddings.clone().transpose(),
            Some(bias.clone()),
            false,
        );
    };
    let bytes = (vocab * hidden * 4) as f64 / 1e9;
    measure(
        format!("Linear decoder 1×{vocab}×{hidden}"),
        &decoder,
        Work::Gbytes(bytes),
        "",
    );
    let logits = random([1, vocab]);
    let top_k = || {
        ops::top_k::softmax_top_k(logits.clone(), 5);
    };
    let bytes = (vocab * 4) as f64 / 1e9;
    measure(
        format!("softmax top-5 1×{vocab}"),
        &top_k,
        Work::Gbytes(bytes),
        "",
    );
    std::fs::write(
        "bench-kernels.json",
        serde_json::to_string_pretty(&table).unwrap(),
    )
    .unwrap();
}
