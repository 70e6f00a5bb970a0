//! Tokenisation (WordPiece, byte-level BPE, Unigram), delegated to Hugging Face's own `tokenizers` crate
//! so ids match the fast tokenizers exactly (same normaliser, pre-tokeniser, added-token matching);
//! BERT's own normaliser, pre-tokeniser and WordPiece take a faster path of the same rules ([`basic`],
//! [`wordpiece`]).

mod basic;
mod wordpiece;

use std::sync::{Mutex, OnceLock, PoisonError};

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::utils::truncation::truncate_encodings;
use tokenizers::{
    AddedToken, Decoder, PostProcessor, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};
use basic::BasicTokenizer;

/// `f` of each item, in order: natively with the items split evenly over the machine's cores (scoped
/// threads: rayon's pool, asleep between calls, did not speed up 32 texts on two cores, where these take
/// 3.2 → 2.0 ms), in the browser (one thread) in turn.
pub(crate) fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > 1 && items.len() > 1 {
            let f = &f;
            return std::thread::scope(|scope| {
                let parts: Vec<_> = items
                    .chunks(items.len().div_ceil(threads))
                    .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|part| part.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            });
        }
    }
    items.iter().map(f).collect()
}

/// The tokens of one input, ready for the model; their strings, where wanted, from
/// [`Tokenizer::ids_to_tokens`].
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    /// Segment ids: 0 for `[CLS] a [SEP]`, 1 for `b [SEP]`.
    pub token_type_ids: Vec<u32>,
    /// `[start, end)` in characters (Unicode scalar values) of the input; `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// Which tokens the post-processor added (`[CLS]`, `[SEP]`, `<s>`, …).
    pub special: Vec<bool>,
    /// Whether the input was cut to fit the model's positions.
    pub truncated: bool,
}

/// One chunk of a (question, context) pair, for extractive question answering.
#[derive(Debug, Clone)]
pub struct Span {
    pub encoding: Encoding,
    /// Which tokens are the context's.
    pub in_context: Vec<bool>,
    /// Each context token's whole word, `[start, end)` in characters of the context.
    pub words: Vec<Option<(usize, usize)>>,
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where the tokenizer is BERT's: its normaliser and pre-tokeniser in one pass.
    basic: Option<BasicTokenizer>,
    /// `[MASK]` (BERT) or `<mask>` (RoBERTa), and its id.
    mask: Option<(String, u32)>,
    /// `[CLS]` or `<s>`.
    cls_id: Option<u32>,
    /// `[UNK]` or `<unk>`.
    unk_id: Option<u32>,
    /// Whether encodings carry segment ids; models without segments (RoBERTa, DistilBERT) read 0s.
    segments: bool,
    max_len: usize,
    /// Past this, an id is not in the vocabulary (a post-processor can be given any id).
    largest_id: u32,
    /// For [`Tokenizer::encode_spans`], which sets its own truncation (chunks with a stride) on it.
    chunker: Kept<Mutex<Option<tokenizers::Tokenizer>>>,
    /// Without post-processor or truncation: on the slow path a pair's texts are read whole and alone with
    /// it, to be cut and joined once (see [`Tokenizer::run`]); the tokenizer's own post-processor would
    /// trim RoBERTa's offsets twice.
    bare: Kept<OnceLock<tokenizers::Tokenizer>>,
}

/// A second `tokenizers` tokenizer beside the main one, made from it at its first use and kept, as cloning
/// a large vocabulary takes longer than answering (280 ms for DeBERTa-v3's 128,000 Unigram pieces
/// natively). A copy of the [`Tokenizer`] starts without one.
#[derive(Default)]
struct Kept<T>(T);

impl<T: Default> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// The longest text tokenized, in bytes.
pub const MAX_TEXT_BYTES: usize = 10_000_000;
/// The most chunks of question answering that one context token may go in (see `encode_spans`).
const REPEATS: usize = 16;

/// BERT's special tokens, then RoBERTa's.
const SPECIALS: [&str; 10] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>", "<unk>", "<mask>",
];

/// A `TemplateProcessing` (alone or in a `Sequence`) defines every special token its templates name, each
/// with as many ids as tokens.
fn check_post_processor(processor: &Value) -> Result<()> {
    let error = |what: String| {
        Err(Error::Tokenizer(format!(
            "tokenizer.json: post_processor {what}"
        )))
    };
    match processor["type"].as_str() {
        Some("Sequence") => {
            for p in processor["processors"].as_array().into_iter().flatten() {
                check_post_processor(p)?;
            }
        }
        Some("TemplateProcessing") => {
            let specials = &processor["special_tokens"];
            for template in ["single", "pair"] {
                for piece in processor[template].as_array().into_iter().flatten() {
                    if let Some(id) = piece["SpecialToken"]["id"].as_str()
                        && specials.get(id).is_none()
                    {
                        return error(format!(
                            "names {id:?}, which its special_tokens do not define"
                        ));
                    }
                }
            }
            for (id, token) in specials.as_object().into_iter().flatten() {
                let len = |key: &str| token[key].as_array().map(Vec::len);
                if len("ids") != len("tokens") {
                    return error(format!("gives {id:?} a different number of ids and tokens"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The special tokens the post-processor adds to a pair (`[CLS] a [SEP] b [SEP]`: 3).
fn pair_specials(inner: &tokenizers::Tokenizer) -> usize {
    inner
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(true))
}

/// `transformers`' truncation: the end cut off, of a pair the longer text first.
const TRUNCATION: TruncationParams = TruncationParams {
    direction: TruncationDirection::Right,
    max_length: 0,
    strategy: TruncationStrategy::LongestFirst,
    stride: 0,
};

fn truncate(inner: &mut tokenizers::Tokenizer, max_len: usize) -> Result<()> {
    // `tokenizers` subtracts a pair's special tokens from the length (a panic, or no truncation, below them).
    let specials = pair_specials(inner);
    if max_len <= specials {
        return Err(Error::Config(format!(
            "texts of at most {max_len} tokens leave no room beside the {specials} special tokens of a pair"
        )));
    }
    inner
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..TRUNCATION
        }))
        .map(drop)
        .map_err(|e| Error::Tokenizer(e.to_string()))
}

/// The first of `candidates` the tokenizer declares special, else the first it has at all: MPNet's
/// vocabulary holds BERT's `[MASK]` as a plain word beside its own special `<mask>`.
fn special_token(inner: &tokenizers::Tokenizer, candidates: &[&str]) -> Option<(String, u32)> {
    let added = inner.get_added_tokens_decoder();
    let special = |id: u32| added.get(&id).is_some_and(|t| t.special);
    let present: Vec<(String, u32)> = candidates
        .iter()
        .filter_map(|t| inner.token_to_id(t).map(|id| (t.to_string(), id)))
        .collect();
    let first_special = present.iter().find(|(_, id)| special(*id)).cloned();
    first_special.or_else(|| present.into_iter().next())
}

impl Tokenizer {
    /// From a `tokenizer.json` (the fast tokenizer's own file). Its saved padding is dropped and its
    /// truncation replaced by `max_len`, as `transformers` does per call.
    pub fn from_tokenizer_json(json: &[u8], max_len: usize) -> Result<Self> {
        // Checked first, where `tokenizers` would panic instead of failing: on a syntax error inside
        // `decoder` (`expect("Helper")`), and at the first encode on a template naming a special token
        // it does not define.
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json could not be read: {e}")))?;
        check_post_processor(&value["post_processor"])?;
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json could not be read: {e}")))?;
        Self::with_limits(inner, max_len)
    }

    /// From BERT's `vocab.txt`, with `do_lower_case`/`strip_accents`/`tokenize_chinese_chars` taken from
    /// `tokenizer_config.json` when given (defaults as in `BertTokenizerFast`).
    pub fn from_vocab(
        vocab_txt: &[u8],
        tokenizer_config: Option<&str>,
        max_len: usize,
    ) -> Result<Self> {
        let options: Value = match tokenizer_config {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                Error::Tokenizer(format!("tokenizer_config.json is not valid JSON: {e}"))
            })?,
            None => Value::Null,
        };
        let flag = |key: &str| options.get(key).and_then(Value::as_bool);
        let lowercase = flag("do_lower_case").unwrap_or(true);
        let vocab = WordPiece::read_bytes(vocab_txt)
            .map_err(|e| Error::Tokenizer(format!("vocab.txt could not be read: {e}")))?;
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| Error::Tokenizer(format!("vocab.txt has no {token} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[UNK]")?;
        let model = WordPiece::builder()
            .vocab(vocab.clone())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| Error::Tokenizer(format!("vocab.txt: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                flag("tokenize_chinese_chars").unwrap_or(true),
                flag("strip_accents"),
                lowercase,
            )))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )))
            .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        let specials: Vec<AddedToken> = SPECIALS
            .iter()
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(&specials);
        Self::with_limits(inner, max_len)
    }

    fn with_limits(mut inner: tokenizers::Tokenizer, max_len: usize) -> Result<Self> {
        inner.with_padding(None);
        truncate(&mut inner, max_len)?;
        let mask = special_token(&inner, &["[MASK]", "<mask>"]);
        let id = |candidates| special_token(&inner, candidates).map(|(_, id)| id);
        let (cls_id, unk_id) = (id(&["[CLS]", "<s>"]), id(&["[UNK]", "<unk>"]));
        let largest_id = inner.get_vocab(true).into_values().max().unwrap_or(0);
        Ok(Self {
            basic: BasicTokenizer::of(&inner),
            inner,
            mask,
            cls_id,
            unk_id,
            segments: true,
            max_len,
            largest_id,
            chunker: Kept::default(),
            bare: Kept::default(),
        })
    }

    /// Encodings cut at `max_len` tokens, if that is fewer than now (sentence-transformers' `max_seq_length`).
    pub fn truncated_at(mut self, max_len: usize) -> Result<Self> {
        if max_len < self.max_len {
            truncate(&mut self.inner, max_len)?;
            self.max_len = max_len;
        }
        Ok(self)
    }

    /// Every token of segment 0, pairs included: for models without segment embeddings, as their
    /// tokenizers leave `token_type_ids` out.
    pub fn without_segments(mut self) -> Self {
        self.segments = false;
        self
    }

    /// Every step through the `tokenizers` crate, none on the fast path: what the fast path is checked against.
    pub fn without_fast_path(mut self) -> Self {
        self.basic = None;
        self
    }

    /// Whether BERT's normaliser and pre-tokeniser take the fast path.
    pub fn has_fast_path(&self) -> bool {
        self.basic.is_some()
    }

    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.run(text, None)
    }

    /// [`encode`](Self::encode) of each text, in order; natively the texts are split over every core, as
    /// 32 texts of 128 tokens took 5 ms on one core of the H100 machine, more than their forward pass there.
    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        on_every_core(texts, |text| self.encode(text))
            .into_iter()
            .collect()
    }

    /// `[CLS] a [SEP] b [SEP]` with segment ids 0 then 1.
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoding> {
        self.run(a, Some(b))
    }

    /// `question` with `context` in chunks of at most `max_len` tokens, cut from the context only, each
    /// chunk's context overlapping the last one's by `stride` tokens: the question-answering pipeline's
    /// features.
    pub fn encode_spans(
        &self,
        question: &str,
        context: &str,
        max_len: usize,
        stride: usize,
    ) -> Result<Vec<Span>> {
        for text in [question, context] {
            if text.len() > MAX_TEXT_BYTES {
                return Err(Error::Input(format!(
                    "a text of {} bytes is more than the {MAX_TEXT_BYTES} a call takes",
                    text.len()
                )));
            }
        }
        // What a chunk leaves the context must exceed the stride (`tokenizers` panics otherwise).
        let question_tokens = self
            .inner
            .encode_char_offsets(question, false)
            .map_err(|e| Error::Tokenizer(format!("could not tokenize: {e}")))?
            .len();
        let room = max_len.saturating_sub(question_tokens + pair_specials(&self.inner));
        if room <= stride {
            return Err(Error::Input(format!(
                "the question takes {question_tokens} of the {max_len} tokens a chunk holds, leaving {room} for \
                 the context, which must be more than docStride ({stride}): shorten the question or the stride"
            )));
        }
        // Each chunk moves on by `room - stride` tokens: a stride near `room` would read every context
        // token hundreds of times (a chunk per token), so no token goes in more than REPEATS chunks.
        if (room - stride) * REPEATS < room {
            let most = room - room.div_ceil(REPEATS);
            return Err(Error::Input(format!(
                "docStride {stride} moves each chunk on by {} of its {room} context tokens, so every token \
                 would be read about {} times: use a docStride of at most {most}",
                room - stride,
                room / (room - stride)
            )));
        }
        let mut chunker = self
            .chunker
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let inner = chunker.get_or_insert_with(|| self.inner.clone());
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::OnlySecond,
                stride,
            }))
            .map_err(|e| Error::Input(format!("cannot split the context: {e}")))?;
        let input = tokenizers::EncodeInput::Dual(question.into(), context.into());
        let mut first = inner
            .encode_char_offsets(input, true)
            .map_err(|e| Error::Input(format!("cannot split the context: {e}")))?;
        drop(chunker);
        let rest = first.take_overflowing();
        std::iter::once(first)
            .chain(rest)
            .map(|chunk| {
                let context_word = |i: usize| {
                    let (sequence, word) = chunk.token_to_word(i)?;
                    (sequence == 1)
                        .then(|| chunk.word_to_chars(word, 1))
                        .flatten()
                };
                let words = (0..chunk.len()).map(context_word).collect();
                let in_context = chunk
                    .get_sequence_ids()
                    .iter()
                    .map(|s| *s == Some(1))
                    .collect();
                Ok(Span {
                    encoding: self.finish(&chunk, false)?,
                    in_context,
                    words,
                })
            })
            .collect()
    }

    fn run(&self, a: &str, b: Option<&str>) -> Result<Encoding> {
        // The model reads a few hundred tokens; past this, `tokenizers` would still normalise every byte.
        if let Some(text) = b.into_iter().chain([a]).find(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(Error::Input(format!(
                "a text of {} bytes is more than the {MAX_TEXT_BYTES} a call takes (the model reads only \
                 its first {} tokens): cut it first",
                text.len(),
                self.max_len
            )));
        }
        let error = |e| Error::Tokenizer(format!("could not tokenize: {e}"));
        let fast = (self.basic.as_ref())
            .filter(|basic| !b.into_iter().chain([a]).any(|t| basic.reorders_marks(t)));
        let model = self.inner.get_model();
        let Some(b) = b else {
            let encoding = match fast {
                // A single text keeps at most `max_len` tokens.
                Some(basic) => {
                    let tokens = basic.tokenize(a, model, self.max_len);
                    let sequence = tokenizers::Encoding::from_tokens(tokens, 0);
                    self.inner.post_process(sequence, None, true)
                }
                None => self.inner.encode_char_offsets(a, true),
            }
            .map_err(error)?;
            return self.finish(&encoding, !encoding.get_overflowing().is_empty());
        };
        // A pair: each text read whole, as truncation weighs both lengths, then cut together here as
        // `tokenizers` cuts a pair (longest first), and what is cut off dropped: its post-processor would
        // pair every cut-off piece of one text with every piece of the other, memory quadratic in their
        // lengths.
        let sequence = |text, type_id: u32| -> Result<_> {
            Ok(match fast {
                Some(basic) => tokenizers::Encoding::from_tokens(
                    basic.tokenize(text, model, usize::MAX),
                    type_id,
                ),
                None => {
                    let mut sequence = self
                        .bare()
                        .encode_char_offsets(text, false)
                        .map_err(error)?;
                    // As `tokenizers` reads a pair's second text (a post-processor sets them again).
                    sequence.set_type_ids(vec![type_id; sequence.len()]);
                    sequence
                }
            })
        };
        let params = TruncationParams {
            max_length: self.max_len.saturating_sub(pair_specials(&self.inner)),
            ..TRUNCATION
        };
        let (a, b) = (sequence(a, 0)?, sequence(b, 1)?);
        let (mut a, mut b) = truncate_encodings(a, Some(b), &params).map_err(error)?;
        let cut_a = !a.take_overflowing().is_empty();
        let cut_b = b.as_mut().is_some_and(|b| !b.take_overflowing().is_empty());
        let encoding = self.inner.post_process(a, b, true).map_err(error)?;
        self.finish(&encoding, cut_a || cut_b)
    }

    fn bare(&self) -> &tokenizers::Tokenizer {
        self.bare.0.get_or_init(|| {
            let mut bare = self.inner.clone();
            bare.with_post_processor(None::<PostProcessorWrapper>);
            // Only a stride can make setting truncation fail.
            bare.with_truncation(None).ok();
            bare
        })
    }

    /// Our encoding of `encoding`, its ids checked against the vocabulary.
    fn finish(&self, encoding: &tokenizers::Encoding, truncated: bool) -> Result<Encoding> {
        if let Some(id) = encoding.get_ids().iter().find(|&&id| id > self.largest_id) {
            return Err(Error::Tokenizer(format!(
                "the tokenizer gave the id {id}, which is not in its vocabulary (its post-processor?)"
            )));
        }
        Ok(Encoding {
            ids: encoding.get_ids().to_vec(),
            token_type_ids: match self.segments {
                true => encoding.get_type_ids().to_vec(),
                false => vec![0; encoding.len()],
            },
            offsets: encoding.get_offsets().to_vec(),
            special: encoding
                .get_special_tokens_mask()
                .iter()
                .map(|&m| m == 1)
                .collect(),
            truncated,
        })
    }

    /// Each id's token (`convert_ids_to_tokens`): `##` pieces as they are, special tokens by name. Made
    /// only where shown: a string for every token cost a tenth of tokenizing, and the model reads ids.
    pub fn ids_to_tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.inner.id_to_token(id).unwrap_or_default())
            .collect()
    }

    /// Tokens joined into text by the tokenizer's decoder (`convert_tokens_to_string`): WordPiece's `##`
    /// pieces, byte-level BPE's bytes, SentencePiece's `▁`.
    pub fn tokens_to_string(&self, tokens: &[String]) -> String {
        match self.inner.get_decoder() {
            Some(decoder) => decoder.decode(tokens.to_vec()).unwrap_or_default(),
            None => tokens.join(" "),
        }
    }

    /// `[CLS]` or `<s>`.
    pub fn cls_token_id(&self) -> Option<u32> {
        self.cls_id
    }

    /// `[UNK]` or `<unk>`.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Text back from ids, WordPiece pieces joined (as `tokenizer.decode`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        self.inner
            .decode(ids, skip_special_tokens)
            .unwrap_or_default()
    }

    /// The ids of the special tokens this vocabulary has (BERT's `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`,
    /// `[MASK]`; RoBERTa's `<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`).
    pub fn special_ids(&self) -> Vec<u32> {
        SPECIALS
            .iter()
            .filter_map(|t| self.inner.token_to_id(t))
            .collect()
    }

    /// The most tokens an encoding has (the model's positions); longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn mask_token_id(&self) -> Option<u32> {
        self.mask.as_ref().map(|(_, id)| *id)
    }

    /// `[MASK]` or `<mask>`, as a text writes it.
    pub fn mask_token(&self) -> Option<&str> {
        self.mask.as_ref().map(|(token, _)| token.as_str())
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The token with the largest id (added tokens included).
    pub fn largest_id(&self) -> Option<(String, u32)> {
        let id = self.largest_id;
        self.inner.id_to_token(id).map(|token| (token, id))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
