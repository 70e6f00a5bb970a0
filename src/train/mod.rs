//! Masked-LM training (native): BERT's pre-training objective over a text corpus with burn's autodiff;
//! AdamW with warm-up and linear decay, weight decay and gradient clipping; checkpoints and resume.
//!
//! A run is a pure function of its config and seed: batch order is fixed per epoch by the seed, and each
//! step's masking by the seed and the step number, so a resumed run repeats an uninterrupted one exactly.
//!
//! Here the run itself (config, schedule, steps, checkpoints); the objective in [`loss`], the text in
//! [`corpus`], the corruption in [`masking`], the held-out tests in [`heldout`] and [`content_words`],
//! the trained model's written forms in [`ship`].

pub mod content_words;
mod corpus;
mod heldout;
mod loss;
pub mod masking;
mod ship;

pub use corpus::Corpus;
pub(crate) use heldout::best_five;
pub use heldout::{Accuracy, Evaluation, Heldout, evaluate, evaluate_dir};
pub use loss::{Targets, masked_logits, mlm_loss, prepare};
pub use ship::{BASE_SHARD, DELTA_SHARD, ship};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::{Module, ParamGroup};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::error::Error;
use crate::io::source::ModelFiles;
use crate::io::weights;
use crate::model::heads::{BertForMaskedLM, MlmHead};
use crate::train::masking::{MaskingConfig, Vocabulary};
use ship::export;

#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Optimizer steps of the whole run; the learning rate decays to 0 at the last one.
    pub steps: usize,
    /// Sequences per step.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Longer passages are cut to this many tokens (`[SEP]` kept).
    #[config(default = 128)]
    pub max_len: usize,
    #[config(default = 2e-4)]
    pub learning_rate: f64,
    /// Steps of linear warm-up from 0.
    #[config(default = 100)]
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay; biases and LayerNorm are not decayed (as BERT).
    #[config(default = 0.01)]
    pub weight_decay: f32,
    /// Each parameter's gradient is scaled down to at most this L2 norm.
    #[config(default = 1.0)]
    pub max_grad_norm: f32,
    #[config(default = 42)]
    pub seed: u64,
    #[config(default = 200)]
    pub checkpoint_every: usize,
    #[config(default = "MaskingConfig::new()")]
    pub masking: MaskingConfig,
    /// Train the word embeddings too (and with them the tied decoder); by default they stay frozen.
    #[config(default = false)]
    pub train_word_embeddings: bool,
}

impl TrainConfig {
    /// Linear warm-up to `learning_rate`, then linear decay to 0 at `steps`.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let left = self.steps.saturating_sub(step) as f64;
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        self.learning_rate * left / span
    }
}

/// The masking rng of one step: independent of every other step, so resuming needs no rng state.
fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ step as u64)
}

fn ints<const D: usize>(t: Tensor<D, Int>) -> crate::Result<Vec<i64>> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::Device(format!("{e:?}")))
}

fn float(t: Tensor<1>) -> crate::Result<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Device(format!("{e:?}")))
        .map(|v| v[0])
}

/// What a run reads and where it writes.
pub struct TrainMlm {
    /// Hugging Face folder of the starting encoder (`BertModel`, or a `BertForMaskedLM` to go on from).
    pub base: PathBuf,
    pub corpus: PathBuf,
    /// Held-out passages, evaluated at each checkpoint (a sample) and at the end (all).
    pub heldout: Option<PathBuf>,
    /// Receives `checkpoint/` and, at the end, the model in Hugging Face layout.
    pub out: PathBuf,
    pub config: TrainConfig,
    /// Go on from `out/checkpoint` with its saved config, but `config.steps` as the new total.
    pub resume: bool,
    /// Pause at this step (checkpoint saved, no export) so that one run can span several sessions.
    pub until: Option<usize>,
}

/// Saved next to the weights in each checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    step: usize,
    tokens: usize,
    seconds: f64,
    config: serde_json::Value,
}

impl TrainMlm {
    /// Trains to the end (or to `until`); returns the held-out accuracy at the end, `None` when paused.
    pub fn run(self, device: Device) -> crate::Result<Option<Evaluation>> {
        let device = device.autodiff();
        let files = ModelFiles::from_dir(&self.base)?;
        let checkpoint_dir = self.out.join("checkpoint");
        let (config, mut progress) = match self.resume {
            true => self.resume_progress(&checkpoint_dir)?,
            false => (
                self.config.clone(),
                Progress {
                    step: 0,
                    tokens: 0,
                    seconds: 0.0,
                    config: serde_json::Value::Null,
                },
            ),
        };
        // Training starts from a BERT checkpoint (its MLM head's names and activation).
        if files.config.architecture != crate::model::config::Architecture::Bert {
            return Err(Error::Input(format!(
                "training takes a BERT checkpoint, not model_type {:?}",
                files.config.architecture.model_type()
            )));
        }
        if config.max_len > files.config.max_position_embeddings || config.max_len < 2 {
            return Err(Error::Input(format!(
                "max_len must be between 2 and the model's {} positions, not {}",
                files.config.max_position_embeddings, config.max_len
            )));
        }
        if config.checkpoint_every == 0 || config.warmup_steps >= config.steps {
            return Err(Error::Input(format!(
                "checkpoint-every must be at least 1 and warmup-steps below steps, not {}, {} and {}",
                config.checkpoint_every, config.warmup_steps, config.steps
            )));
        }
        let tokenizer = &files.tokenizer;
        let vocab = vocabulary(&files)?;
        let pad_id = files.config.pad_token_id as u32;
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
        };
        let corpus = Corpus::from_text(&read(&self.corpus)?, tokenizer, config.max_len)?;
        let heldout = match &self.heldout {
            Some(path) => Some(Heldout::from_text(
                &read(path)?,
                tokenizer,
                config.max_len,
                config.seed,
            )?),
            None => None,
        };

        let mut model = start_model(&files, config.seed, &device)?;
        let mut optimizer = optimizer(&config)?;
        if self.resume {
            model = model
                .try_load_file(checkpoint_dir.join("model.bpk"))
                .map_err(|e| Error::Io(format!("checkpoint model: {e}")))?;
            optimizer = optimizer
                .load(checkpoint_dir.join("optim.bpk"))
                .map_err(|e| Error::Io(format!("checkpoint optimizer: {e}")))?;
        }
        if !config.train_word_embeddings {
            model = freeze_word_embeddings(model);
        }

        let eval = |model: &BertForMaskedLM, all: bool| -> crate::Result<Option<Evaluation>> {
            let Some(heldout) = &heldout else {
                return Ok(None);
            };
            let limit = (!all).then_some(512);
            heldout
                .evaluate(
                    &model.valid(),
                    &files,
                    &vocab,
                    config.seed,
                    limit,
                    &device.clone().inner(),
                )
                .map(Some)
        };

        let bar =
            indicatif::ProgressBar::new(config.steps as u64).with_position(progress.step as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .map_err(|e| Error::Input(e.to_string()))?,
        );
        let log_lines = !std::io::stderr().is_terminal();
        let batches_per_epoch = corpus.len().div_ceil(config.batch_size);
        let mut plan = (usize::MAX, Vec::new());
        // The progress line's means over the steps since it was last written or the run (re)started.
        let (mut window_loss, mut window_steps) = (0.0, 0);
        let (mut window_correct, mut window_n, mut window_tokens) = (0, 0, 0);
        let mut window_start = Instant::now();
        let started = Instant::now() - std::time::Duration::from_secs_f64(progress.seconds);

        let end = self.until.unwrap_or(config.steps).min(config.steps);
        for step in progress.step..end {
            let epoch = step / batches_per_epoch;
            if plan.0 != epoch {
                plan = (epoch, corpus.epoch(epoch, config.batch_size, config.seed));
            }
            let sequences: Vec<Vec<u32>> = plan.1[step % batches_per_epoch]
                .iter()
                .map(|&i| corpus.sequences[i].clone())
                .collect();
            let masked = config
                .masking
                .apply(&sequences, &vocab, &mut step_rng(config.seed, step));
            let (batch, targets) = prepare(&masked, pad_id, &device);
            let tokens: usize = sequences.iter().map(Vec::len).sum();

            let (loss, logits) = mlm_loss(&model, &batch, &targets);
            let correct = logits
                .inner()
                .argmax(1)
                .reshape([targets.labels.dims()[0]])
                .equal(targets.labels.clone().inner())
                .int()
                .sum();
            let loss_value = float(loss.clone().inner())?;
            if !loss_value.is_finite() {
                return Err(Error::Input(format!(
                    "the loss diverged at step {step} ({loss_value})"
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate_at(step), model, grads);

            window_loss += loss_value as f64;
            window_steps += 1;
            window_correct += ints(correct)?[0] as usize;
            window_n += targets.labels.dims()[0];
            window_tokens += tokens;
            progress.tokens += tokens;
            let done = step + 1;
            bar.set_position(done as u64);
            if done % 10 == 0 || done == config.steps {
                let message = format!(
                    "loss {:.3} acc {:.3} {:.0} tok/s lr {:.2e}",
                    window_loss / window_steps as f64,
                    window_correct as f64 / window_n.max(1) as f64,
                    window_tokens as f64 / window_start.elapsed().as_secs_f64(),
                    config.learning_rate_at(step)
                );
                if log_lines {
                    eprintln!("step {done}/{} {message}", config.steps);
                }
                bar.set_message(message);
                (window_loss, window_steps) = (0.0, 0);
                (window_correct, window_n, window_tokens) = (0, 0, 0);
                window_start = Instant::now();
            }
            if done % config.checkpoint_every == 0 || done == end {
                progress.step = done;
                progress.seconds = started.elapsed().as_secs_f64();
                save_checkpoint(&model, &optimizer, &progress, &config, &checkpoint_dir)?;
                if done != config.steps
                    && let Some(e) = eval(&model, false)?
                {
                    let (t, w) = (e.masked_tokens, e.content_words);
                    let line = format!(
                        "step {done}: held-out top-1 / top-5: masked tokens {:.3} / {:.3}, content words {:.3} / {:.3}",
                        t.top1, t.top5, w.top1, w.top5
                    );
                    match log_lines {
                        true => eprintln!("{line}"),
                        false => bar.println(line),
                    }
                }
            }
        }
        bar.finish();
        if end < config.steps {
            return Ok(None);
        }
        export(&model, &self.base, &self.out)?;
        let accuracy = eval(&model, true)?.unwrap_or_default();
        let summary = serde_json::json!({
            "steps": config.steps,
            "tokens": progress.tokens,
            "seconds": started.elapsed().as_secs_f64(),
            "heldout": accuracy,
            "config": config,
        });
        std::fs::write(self.out.join("training.json"), format!("{summary:#}\n"))
            .map_err(|e| Error::Io(format!("{}: {e}", self.out.display())))?;
        Ok(Some(accuracy))
    }

    fn resume_progress(&self, dir: &Path) -> crate::Result<(TrainConfig, Progress)> {
        let path = dir.join("trainer.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Io(format!(
                "{}: {e} (nothing to resume: run without --resume first)",
                path.display()
            ))
        })?;
        let progress: Progress = serde_json::from_str(&text)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut config: TrainConfig = serde_json::from_value(progress.config.clone())
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        if self.config.steps < progress.step {
            return Err(Error::Input(format!(
                "--steps {} is before the checkpoint's step {}",
                self.config.steps, progress.step
            )));
        }
        config.steps = self.config.steps;
        Ok((config, progress))
    }
}

fn vocabulary(files: &ModelFiles) -> crate::Result<Vocabulary> {
    let tokenizer = &files.tokenizer;
    Ok(Vocabulary {
        mask_id: tokenizer
            .mask_token_id()
            .ok_or_else(|| Error::Tokenizer("the tokenizer has no [MASK] token".into()))?,
        size: files.config.vocab_size,
        special_ids: tokenizer.special_ids(),
        continues_word: (0..files.config.vocab_size as u32)
            .map(|id| {
                tokenizer
                    .id_to_token(id)
                    .is_some_and(|t| t.starts_with("##"))
            })
            .collect(),
    })
}

/// The encoder from `files`; its MLM head too if the checkpoint has one, else a fresh head seeded by `seed`.
fn start_model(files: &ModelFiles, seed: u64, device: &Device) -> crate::Result<BertForMaskedLM> {
    if files
        .checkpoint
        .contains("cls.predictions.transform.dense.weight")
    {
        return weights::load_bert_for_masked_lm(&files.checkpoint, &files.config, device);
    }
    device.seed(seed);
    Ok(BertForMaskedLM {
        bert: weights::load_bert(&files.checkpoint, &files.config, device)?,
        cls: MlmHead::init(&files.config, device),
    })
}

/// The decoder is tied to the word embeddings; keeping them fixed keeps the encoder's vocabulary space
/// (and lets the shipped model leave them out).
fn freeze_word_embeddings(mut model: BertForMaskedLM) -> BertForMaskedLM {
    let embedding = &mut model.bert.embeddings.word_embeddings;
    embedding.weight = embedding.weight.clone().set_require_grad(false);
    model
}

fn optimizer(config: &TrainConfig) -> crate::Result<ModuleOptimizer> {
    let clipping = GradientClippingConfig::Norm(config.max_grad_norm);
    let adamw = || {
        AdamWConfig::new()
            .with_epsilon(1e-6)
            .with_grad_clipping(Some(clipping.clone()))
    };
    let no_decay = ParamGroup::from_regex(r"(\.bias|\.beta|\.gamma)$")
        .map_err(|e| Error::Input(format!("{e:?}")))?;
    Ok(adamw()
        .with_weight_decay(config.weight_decay)
        .init()
        .with_group(
            no_decay,
            adamw().with_weight_decay(0.0).build(),
            Some(clipping.init()),
        ))
}

fn save_checkpoint(
    model: &BertForMaskedLM,
    optimizer: &ModuleOptimizer,
    progress: &Progress,
    config: &TrainConfig,
    dir: &Path,
) -> crate::Result<()> {
    let io = |e: &dyn std::fmt::Display| Error::Io(format!("checkpoint {}: {e}", dir.display()));
    // Written beside, then swapped in: an interrupted save leaves the previous checkpoint whole.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&e))?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| io(&e))?;
    optimizer.save(tmp.join("optim.bpk")).map_err(|e| io(&e))?;
    let progress = Progress {
        step: progress.step,
        tokens: progress.tokens,
        seconds: progress.seconds,
        config: serde_json::to_value(config).map_err(|e| io(&e))?,
    };
    let json = serde_json::to_string_pretty(&progress).map_err(|e| io(&e))?;
    std::fs::write(tmp.join("trainer.json"), json).map_err(|e| io(&e))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| io(&e))
}
