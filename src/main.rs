//! The native command line: one JSON object per input text on stdout, errors as one line on stderr.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use webbert::io::jsonl::JsonLines;
use webbert::io::quantize::quantize;
use webbert::{
    Aggregation, Backend, Classifier, Embedder, Error, FillMask, ModelFiles, Pooling, QaOptions,
    QuestionAnswerer, Result, TokenClassifier, WeightsDtype,
};

#[derive(Parser)]
#[command(
    name = "webbert",
    version,
    about = "BERT-family encoders on burn: tokenize, fill-mask, embed, classify, rerank, ner, answer, train a masked-LM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Errors in full (a device error's chain and backtrace), not just their first line.
    #[arg(long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Token ids, tokens and character offsets.
    Tokenize(Inputs),
    /// Top-k predictions for every mask token ([MASK], <mask>).
    FillMask {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// One sentence embedding per text.
    Embed {
        #[command(flatten)]
        inputs: Inputs,
        /// `mean` or `cls`; by default as the model's sentence-transformers files say (else mean).
        #[arg(long)]
        pooling: Option<Pooling>,
        /// Leave the vectors as pooled (by default normalised unless the model's modules.json has no
        /// Normalize module).
        #[arg(long)]
        no_normalize: bool,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// The likeliest labels of a sequence classifier per text, or per pair (`--pair`; `--jsonl` lines a
    /// string or `{"text", "text_pair"}`).
    Classify {
        #[command(flatten)]
        inputs: Inputs,
        /// A second text read with each one (`[CLS] text [SEP] pair [SEP]`).
        #[arg(long)]
        pair: Option<String>,
        #[arg(long, default_value_t = 1)]
        top_k: usize,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// The texts as passages ranked by a cross-encoder's relevance to --query, best first.
    Rerank {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long)]
        query: String,
        /// Only the best this many.
        #[arg(long)]
        top_k: Option<usize>,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// The named entities of each text (a token classifier's labels): `entity` is the token's label, or
    /// the run's type with `--aggregation simple`.
    Ner {
        #[command(flatten)]
        inputs: Inputs,
        /// `none` (one entity per token) or `simple` (runs of one type grouped).
        #[arg(long, default_value = "none")]
        aggregation: Aggregation,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// The answer to --question in each context (extractive question answering; `--jsonl` lines
    /// `{"question", "context"}`).
    Qa {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(long)]
        question: Option<String>,
        #[arg(long, default_value_t = 1)]
        top_k: usize,
        /// Most tokens in an answer.
        #[arg(long, default_value_t = 15)]
        max_answer_len: usize,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// Trains a masked-LM head and the encoder (word embeddings frozen) with BERT's recipe.
    TrainMlm(TrainArgs),
    /// Held-out accuracy (top-1, top-5) of a BertForMaskedLM on a text file: 15% of the tokens masked, and
    /// one content word masked per sentence.
    EvalMlm {
        #[arg(long)]
        model: PathBuf,
        /// One passage per line.
        #[arg(long)]
        text: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Evaluate the first N passages and N sentences spread over the file (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
    /// Writes a trained model for models/: its delta against the base encoder (f16, no word embeddings), or
    /// with trained word embeddings the whole model in int8 (model.q8.safetensors).
    ShipMlm {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a smaller variant of a model's weights beside its other files (OUT may be MODEL itself),
    /// refused if its embeddings stray from the original's.
    Quantize {
        /// `fp16` (model.fp16.safetensors, half the bytes) or `q8` (model.q8.safetensors, int8 matrices with
        /// per-row scales, about a quarter).
        #[arg(long)]
        dtype: WeightsDtype,
        model: PathBuf,
        out: PathBuf,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Starting encoder (Hugging Face layout).
    #[arg(long)]
    base: PathBuf,
    /// Training text, one passage per line.
    #[arg(long)]
    corpus: PathBuf,
    /// Held-out text, evaluated at checkpoints and at the end.
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// Output folder: checkpoint/, then the trained model in Hugging Face layout.
    #[arg(long)]
    out: PathBuf,
    /// Total optimizer steps of the run.
    #[arg(long)]
    steps: usize,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<usize>,
    #[arg(long)]
    weight_decay: Option<f32>,
    #[arg(long)]
    max_grad_norm: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// `word` (whole-word masking: every piece of 15% of the words) or `token` (15% of the tokens).
    #[arg(long, default_value = "word")]
    masking: Masking,
    /// Train the word embeddings (and the tied decoder) too; frozen by default.
    #[arg(long)]
    train_word_embeddings: bool,
    /// Go on from OUT/checkpoint with its saved settings; --steps sets the (new) total.
    #[arg(long)]
    resume: bool,
    /// Stop at this step with a checkpoint (resume later with --resume).
    #[arg(long)]
    until: Option<usize>,
    #[arg(long, default_value = "cpu")]
    backend: Backend,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Masking {
    Word,
    Token,
}

#[derive(Args)]
struct Inputs {
    /// A folder in Hugging Face layout (config.json, tokenizer, model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// A file of JSON strings, one per line (`-` for stdin).
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Which weights: `fp32` (model.safetensors), `fp16` (model.fp16.safetensors), `q8` (model.q8.safetensors),
    /// `auto` (the smallest there is).
    #[arg(long, default_value = "auto")]
    dtype: WeightsDtype,
    texts: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose || std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.to_string();
            match message.lines().next() {
                Some(first) if !verbose => eprintln!("webbert: {first}"),
                _ => eprintln!("webbert: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut emit = |value: serde_json::Value| {
        writeln!(out, "{value}").map_err(|e| Error::Io(format!("stdout: {e}")))
    };
    match cli.command {
        Command::Tokenize(inputs) => {
            let files = inputs.files()?;
            for text in inputs.texts()? {
                let e = files.tokenizer.encode(&text?)?;
                let tokens = files.tokenizer.ids_to_tokens(&e.ids);
                emit(
                    json!({"ids": e.ids, "tokens": tokens, "offsets": e.offsets, "truncated": e.truncated}),
                )?;
            }
        }
        Command::FillMask {
            inputs,
            top_k,
            backend,
        } => {
            let pipeline = FillMask::load(inputs.files()?, backend.device()?)?;
            for text in inputs.texts()? {
                let output = pollster::block_on(pipeline.predict(&text?, top_k))?;
                let masks: Vec<Vec<_>> = output
                    .masks
                    .iter()
                    .map(|m| m.iter().map(|p| json!({"token": p.token, "token_id": p.token_id, "score": p.score})).collect())
                    .collect();
                emit(json!({"masks": masks, "truncated": output.truncated}))?;
            }
        }
        Command::Embed {
            inputs,
            pooling,
            no_normalize,
            backend,
        } => {
            let pipeline = Embedder::load(inputs.files()?, backend.device()?)?;
            let pooling = pooling.unwrap_or(pipeline.sentence.pooling);
            let normalize = pipeline.sentence.normalize && !no_normalize;
            for window in windows(inputs.texts()?) {
                for embedding in pollster::block_on(pipeline.embed(&window?, pooling, normalize))? {
                    emit(json!({"embedding": embedding}))?;
                }
            }
        }
        Command::Classify {
            inputs,
            pair,
            top_k,
            backend,
        } => {
            let pipeline = Classifier::load(inputs.files()?, backend.device()?)?;
            let lines = inputs.items(r#"a JSON string or {"text", "text_pair"}"#, |text| {
                ClassifyLine::Pair {
                    text,
                    text_pair: pair.clone(),
                }
            })?;
            for window in windows(lines) {
                let window = window?;
                let pairs: Vec<_> = window.iter().map(ClassifyLine::input).collect();
                for labels in pollster::block_on(pipeline.classify(&pairs, top_k))? {
                    emit(json!({"labels": labels}))?;
                }
            }
        }
        Command::Rerank {
            inputs,
            query,
            top_k,
            backend,
        } => {
            let pipeline = Classifier::load(inputs.files()?, backend.device()?)?;
            let passages = inputs.texts()?.collect::<Result<Vec<_>>>()?;
            let top_k = top_k.unwrap_or(passages.len());
            for ranked in pollster::block_on(pipeline.rerank(&query, &passages, top_k))? {
                emit(serde_json::to_value(ranked).unwrap_or_default())?;
            }
        }
        Command::Ner {
            inputs,
            aggregation,
            backend,
        } => {
            let pipeline = TokenClassifier::load(inputs.files()?, backend.device()?)?;
            for text in inputs.texts()? {
                let entities = pollster::block_on(pipeline.entities(&text?, aggregation))?;
                let entities: Vec<_> = entities
                    .into_iter()
                    .map(|e| {
                        json!({"entity": e.entity.or(e.entity_group), "score": e.score, "word": e.word,
                               "start": e.start, "end": e.end})
                    })
                    .collect();
                emit(json!({ "entities": entities }))?;
            }
        }
        Command::Qa {
            inputs,
            question,
            top_k,
            max_answer_len,
            backend,
        } => {
            let pipeline = QuestionAnswerer::load(inputs.files()?, backend.device()?)?;
            let options = QaOptions {
                top_k,
                max_answer_len,
                ..QaOptions::new(pipeline.tokenizer.max_len())
            };
            let lines = inputs.items(r#"{"question", "context"}"#, |context| QaLine {
                question: question.clone(),
                context,
            })?;
            for line in lines {
                let QaLine { question, context } = line?;
                let question = question.ok_or_else(|| {
                    Error::Input("a context needs --question (or give --jsonl lines {\"question\", \"context\"})".into())
                })?;
                let answers = pollster::block_on(pipeline.answer(&question, &context, &options))?;
                match top_k {
                    1 => emit(serde_json::to_value(&answers[0]).unwrap_or_default())?,
                    _ => emit(json!({ "answers": answers }))?,
                }
            }
        }
        Command::TrainMlm(args) => {
            let backend = args.backend;
            match args.into_run().run(backend.device()?)? {
                Some(accuracy) => emit(serde_json::to_value(accuracy).unwrap_or_default())?,
                None => emit(json!({"paused": true}))?,
            }
        }
        Command::EvalMlm {
            model,
            text,
            seed,
            limit,
            backend,
        } => {
            let accuracy =
                webbert::train::evaluate_dir(&model, &text, seed, limit, &backend.device()?)?;
            emit(serde_json::to_value(accuracy).unwrap_or_default())?;
        }
        Command::ShipMlm { model, out } => {
            let bytes = webbert::train::ship(&model, &out)?;
            emit(json!({"bytes": bytes, "out": out}))?;
        }
        Command::Quantize { dtype, model, out } => {
            let report = quantize(&model, &out, dtype, &Backend::Cpu.device()?)?;
            emit(serde_json::to_value(report).unwrap_or_default())?;
        }
    }
    Ok(())
}

impl TrainArgs {
    fn into_run(self) -> webbert::train::TrainMlm {
        let mut config = webbert::train::TrainConfig::new(self.steps);
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { config.$field = v; })* };
        }
        set!(
            batch_size,
            max_len,
            warmup_steps,
            weight_decay,
            max_grad_norm,
            seed,
            checkpoint_every
        );
        if let Some(lr) = self.lr {
            config.learning_rate = lr;
        }
        config.masking.whole_word = self.masking == Masking::Word;
        config.train_word_embeddings = self.train_word_embeddings;
        webbert::train::TrainMlm {
            base: self.base,
            corpus: self.corpus,
            heldout: self.heldout,
            out: self.out,
            config,
            resume: self.resume,
            until: self.until,
        }
    }
}

/// Texts embedded or classified together from `--jsonl`: enough to group them by length.
const WINDOW: usize = 1024;

impl Inputs {
    fn files(&self) -> Result<ModelFiles> {
        ModelFiles::from_dir_as(&self.model, self.dtype)
    }

    /// The texts from the arguments, then from `--jsonl` as it is read; at least one.
    fn texts(&self) -> Result<impl Iterator<Item = Result<String>> + use<>> {
        self.items("a JSON string", |text| text)
    }

    /// The inputs: each argument made one by `from_arg`, then `--jsonl`'s lines, each `expected`.
    fn items<T: serde::de::DeserializeOwned, F: Fn(String) -> T>(
        &self,
        expected: &'static str,
        from_arg: F,
    ) -> Result<impl Iterator<Item = Result<T>> + use<T, F>> {
        let lines = match &self.jsonl {
            Some(path) => Some(open_jsonl(path, expected)?),
            None => None,
        };
        let mut texts = self
            .texts
            .clone()
            .into_iter()
            .map(|text| Ok(from_arg(text)))
            .collect::<Vec<_>>()
            .into_iter()
            .chain(lines.into_iter().flatten())
            .peekable();
        if texts.peek().is_none() {
            return Err(Error::Input(
                "no input text: pass texts as arguments or with --jsonl FILE".into(),
            ));
        }
        Ok(texts)
    }
}

/// Inputs in windows of [`WINDOW`]: a file of any length in constant memory, grouped by length within each
/// window.
fn windows<T>(inputs: impl Iterator<Item = Result<T>>) -> impl Iterator<Item = Result<Vec<T>>> {
    let mut inputs = inputs.peekable();
    std::iter::from_fn(move || {
        inputs
            .peek()
            .is_some()
            .then(|| inputs.by_ref().take(WINDOW).collect::<Result<Vec<_>>>())
    })
}

/// One input of `classify`: a text, or a pair read together.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ClassifyLine {
    Text(String),
    Pair {
        text: String,
        text_pair: Option<String>,
    },
}

impl ClassifyLine {
    fn input(&self) -> (&str, Option<&str>) {
        match self {
            ClassifyLine::Text(text) => (text, None),
            ClassifyLine::Pair { text, text_pair } => (text, text_pair.as_deref()),
        }
    }
}

/// One input of `qa`.
#[derive(serde::Deserialize)]
struct QaLine {
    question: Option<String>,
    context: String,
}

/// `--jsonl PATH` (`-` for stdin), read a line at a time.
fn open_jsonl<T>(path: &Path, expected: &'static str) -> Result<JsonLines<Box<dyn BufRead>, T>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    Ok(JsonLines::of(reader, &path.display().to_string(), expected))
}
