//! The native command line: one JSON object per input text on stdout, errors as one line on stderr.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use webbert::{Backend, Embedder, Error, FillMask, ModelFiles, Pooling, Result};

#[derive(Parser)]
#[command(
    name = "webbert",
    version,
    about = "BERT encoders on burn: tokenize, fill-mask, embed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WordPiece ids, tokens and character offsets.
    Tokenize(Inputs),
    /// Top-k predictions for every [MASK].
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
        #[arg(long, default_value = "mean")]
        pooling: Pooling,
        #[arg(long)]
        no_normalize: bool,
        #[arg(long, default_value = "cpu")]
        backend: Backend,
    },
}

#[derive(Args)]
struct Inputs {
    /// A folder in Hugging Face layout (config.json, tokenizer, model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// A file of JSON strings, one per line (`-` for stdin).
    #[arg(long)]
    jsonl: Option<PathBuf>,
    texts: Vec<String>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webbert: {e}");
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
            let texts = inputs.texts()?;
            let files = ModelFiles::from_dir(&inputs.model)?;
            for text in texts {
                let e = files.tokenizer.encode(&text)?;
                emit(
                    json!({"ids": e.ids, "tokens": e.tokens, "offsets": e.offsets, "truncated": e.truncated}),
                )?;
            }
        }
        Command::FillMask {
            inputs,
            top_k,
            backend,
        } => {
            let texts = inputs.texts()?;
            let pipeline = FillMask::load(ModelFiles::from_dir(&inputs.model)?, backend.device()?)?;
            for text in texts {
                let output = pollster::block_on(pipeline.predict(&text, top_k))?;
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
            let texts = inputs.texts()?;
            let pipeline = Embedder::load(ModelFiles::from_dir(&inputs.model)?, backend.device()?)?;
            for embedding in pollster::block_on(pipeline.embed(&texts, pooling, !no_normalize))? {
                emit(json!({"embedding": embedding}))?;
            }
        }
    }
    Ok(())
}

impl Inputs {
    /// The texts from the arguments, then from `--jsonl`; at least one.
    fn texts(&self) -> Result<Vec<String>> {
        let mut texts = self.texts.clone();
        if let Some(path) = &self.jsonl {
            texts.extend(read_jsonl(path)?);
        }
        if texts.is_empty() {
            return Err(Error::Input(
                "no input text: pass texts as arguments or with --jsonl FILE".into(),
            ));
        }
        Ok(texts)
    }
}

fn read_jsonl(path: &Path) -> Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut texts = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line =
            line.map_err(|e| Error::Io(format!("{} line {}: {e}", path.display(), n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).map_err(|e| {
            Error::Input(format!(
                "{} line {}: expected a JSON string ({e})",
                path.display(),
                n + 1
            ))
        })?;
        texts.push(text);
    }
    Ok(texts)
}
