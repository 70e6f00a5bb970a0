//! BERT's basic tokenisation (clean, split CJK ideographs, strip accents, lowercase, split on whitespace and
//! punctuation) in one pass over the text, for tokenizers that are exactly `BertNormalizer` +
//! `BertPreTokenizer`. Same rules, same Unicode tables as the `tokenizers` crate, whose `NormalizedString`
//! rebuilds the text and its alignments once per rule: in WebAssembly that cost 10–15 µs per token, as
//! long as the model's forward pass on a GPU. The words then go through WordPiece ([`super::wordpiece`])
//! and the crate's post-processor (checked against `BertTokenizerFast` in tests/tokenizer.rs).

use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Token};
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;
use unicode_normalization_alignments::char::{canonical_combining_class, decompose_canonical};

use super::wordpiece::FastWordPiece;

#[derive(Debug, Clone)]
pub struct BasicTokenizer {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    /// Added tokens (`[MASK]`, …) matched verbatim in the raw text, longest first, with their ids.
    added: Vec<(String, u32)>,
    /// Which bytes begin an added token: only there is a match tried.
    added_starts: [bool; 256],
    word_piece: FastWordPiece,
}

impl BasicTokenizer {
    /// The fast path for `tokenizer`, if its normaliser, pre-tokeniser, model and added tokens are BERT's
    /// (and no added token is empty).
    pub fn of(tokenizer: &tokenizers::Tokenizer) -> Option<Self> {
        let word_piece = FastWordPiece::of(tokenizer.get_model())?;
        let Some(NormalizerWrapper::BertNormalizer(n)) = tokenizer.get_normalizer() else {
            return None;
        };
        let Some(PreTokenizerWrapper::BertPreTokenizer(_)) = tokenizer.get_pre_tokenizer() else {
            return None;
        };
        let mut added = Vec::new();
        for (id, token) in tokenizer.get_added_tokens_decoder() {
            if token.normalized || token.lstrip || token.rstrip || token.single_word {
                return None;
            }
            added.push((token.content, id));
        }
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut added_starts = [false; 256];
        for (content, _) in &added {
            added_starts[*content.as_bytes().first()? as usize] = true;
        }
        Some(Self {
            clean_text: n.clean_text,
            handle_chinese_chars: n.handle_chinese_chars,
            strip_accents: n.strip_accents.unwrap_or(n.lowercase),
            lowercase: n.lowercase,
            added,
            added_starts,
            word_piece,
        })
    }

    /// The tokens of `text` before special tokens and truncation, offsets in characters of `text`, token
    /// strings left empty; it stops once it has more than `limit` (the rest would be truncated: a long
    /// text costs no more).
    pub fn tokenize(&self, text: &str, model: &impl Model, limit: usize) -> Vec<Token> {
        let mut words = Words::new(model, &self.word_piece);
        let mut rest = text;
        let mut at = 0; // characters of `text` before `rest`
        while !rest.is_empty() {
            let (before, found) = self.next_added(rest);
            for c in before.chars() {
                self.push_char(c, at, &mut words);
                at += 1;
                // Finished words never change: the first `limit` tokens are final.
                if words.tokens.len() > limit {
                    return words.tokens;
                }
            }
            words.end();
            let Some((content, id)) = found else { break };
            let len = content.chars().count();
            words
                .tokens
                .push(Token::new(*id, String::new(), (at, at + len)));
            if words.tokens.len() > limit {
                return words.tokens;
            }
            at += len;
            rest = &rest[before.len() + content.len()..];
        }
        words.tokens
    }

    /// Whether NFD would reorder combining marks across two of `text`'s characters (a mark of a lower
    /// class after one of a higher): then stripping accents character by character, as here, would place
    /// a kept mark differently from the normaliser, which decomposes the text as a whole. Such texts take
    /// the `tokenizers` path.
    pub fn reorders_marks(&self, text: &str) -> bool {
        if !self.strip_accents {
            return false;
        }
        let mut last = 0; // combining class of the character before, as decomposed
        for c in text.chars() {
            if self.cleans_away(c) {
                continue; // removed first: the marks either side meet
            }
            if c.is_ascii() {
                last = 0;
                continue;
            }
            let (mut first, mut end) = (None, 0);
            decompose_canonical(c, |d| {
                let class = canonical_combining_class(d);
                first.get_or_insert(class);
                end = class;
            });
            if first.is_some_and(|first| first != 0 && first < last) {
                return true;
            }
            last = end;
        }
        false
    }

    /// The text before the first added token in `text`, and that token (the longest, where several start there).
    fn next_added<'t>(&self, text: &'t str) -> (&'t str, Option<&(String, u32)>) {
        let bytes = text.as_bytes();
        // A token's first byte is ASCII or a UTF-8 lead byte, so `i` is a character boundary.
        for (i, &b) in bytes.iter().enumerate() {
            if self.added_starts[b as usize]
                && let Some(found) = self
                    .added
                    .iter()
                    .find(|(c, _)| bytes[i..].starts_with(c.as_bytes()))
            {
                return (&text[..i], Some(found));
            }
        }
        (text, None)
    }

    /// Whether cleaning removes `c` (NUL, the replacement character, controls) before any other rule.
    fn cleans_away(&self, c: char) -> bool {
        self.clean_text && (c == '\0' || c == '\u{fffd}' || is_control(c))
    }

    /// `c`, the `at`-th character of the text, through the normaliser's rules into the current word.
    fn push_char<M: Model>(&self, c: char, at: usize, words: &mut Words<M>) {
        if self.cleans_away(c) {
            return;
        }
        if self.clean_text && is_whitespace(c) {
            return words.end();
        }
        if c.is_ascii() {
            let c = if self.lowercase {
                c.to_ascii_lowercase()
            } else {
                c
            };
            return words.push(c, at);
        }
        // An ideograph is a word of its own (the normaliser pads it with spaces).
        let ideograph = self.handle_chinese_chars && is_chinese_char(c);
        if ideograph {
            words.end();
        }
        if self.strip_accents {
            let mut buf = [0; 4];
            for (d, _) in c.encode_utf8(&mut buf).nfd() {
                if !d.is_mark_nonspacing() {
                    self.push_cased(d, at, words);
                }
            }
        } else {
            self.push_cased(c, at, words);
        }
        if ideograph {
            words.end();
        }
    }

    fn push_cased<M: Model>(&self, c: char, at: usize, words: &mut Words<M>) {
        if self.lowercase {
            for l in c.to_lowercase() {
                words.push(l, at);
            }
        } else {
            words.push(c, at);
        }
    }
}

/// The tokens so far, the word being built (normalised) with each byte's character in the original text,
/// and the WordPiece rules and vocabulary each finished word goes through.
struct Words<'m, M: Model> {
    model: &'m M,
    word_piece: &'m FastWordPiece,
    tokens: Vec<Token>,
    word: String,
    origin: Vec<usize>,
    /// WordPiece's buffer for the pieces it looks up.
    piece: String,
}

impl<'m, M: Model> Words<'m, M> {
    fn new(model: &'m M, word_piece: &'m FastWordPiece) -> Self {
        Self {
            model,
            word_piece,
            tokens: Vec::new(),
            word: String::new(),
            origin: Vec::new(),
            piece: String::new(),
        }
    }

    /// Adds `c` (from the `at`-th character): punctuation is a word of its own, as `BertPreTokenizer` splits.
    fn push(&mut self, c: char, at: usize) {
        if c.is_whitespace() {
            return self.end();
        }
        let punctuation = is_punctuation(c);
        if punctuation {
            self.end();
        }
        self.word.push(c);
        self.origin.extend(std::iter::repeat_n(at, c.len_utf8()));
        if punctuation {
            self.end();
        }
    }

    /// Ends the current word: its WordPiece tokens, offsets mapped back to the original characters.
    fn end(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let first = self.tokens.len();
        self.word_piece
            .tokenize(self.model, &self.word, &mut self.piece, &mut self.tokens);
        for piece in &mut self.tokens[first..] {
            let (start, end) = piece.offsets;
            piece.offsets = (self.origin[start], self.origin[end - 1] + 1);
        }
        self.word.clear();
        self.origin.clear();
    }
}

/// As `BertNormalizer`: tab, newline and carriage return count as whitespace, not control characters.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    // ASCII's only category C characters are its controls (Cc): no table search for them.
    let other = match c.is_ascii() {
        true => c.is_ascii_control(),
        false => c.is_other(),
    };
    other && !matches!(c, '\t' | '\n' | '\r')
}

/// As `BertPreTokenizer`: ASCII punctuation (symbols such as `$` and `+` too) or category P.
fn is_punctuation(c: char) -> bool {
    // Every ASCII character of category P is ASCII punctuation: no table search for ASCII.
    match c.is_ascii() {
        true => c.is_ascii_punctuation(),
        false => c.is_punctuation(),
    }
}

/// The CJK Unified Ideographs blocks, as BERT defines "Chinese characters".
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII shortcuts give what the category tables give, for every ASCII character.
    #[test]
    fn ascii_shortcuts_match_the_unicode_tables() {
        for c in '\0'..='\x7f' {
            let control = !matches!(c, '\t' | '\n' | '\r') && c.is_other();
            assert_eq!(is_control(c), control, "{c:?}");
            let punctuation = c.is_ascii_punctuation() || c.is_punctuation();
            assert_eq!(is_punctuation(c), punctuation, "{c:?}");
        }
    }
}
