//! WordPiece's greedy longest-match-first split of one word, as the `tokenizers` crate's model does it, for
//! the fast path ([`super::basic`]). The crate's model allocates a string for every piece it tries and
//! every piece it returns; this one looks pieces up in one reused buffer and returns ids and offsets only
//! (token strings come from [`super::Tokenizer::ids_to_tokens`] where wanted), as the allocations took a
//! third of tokenizing.

use tokenizers::models::ModelWrapper;
use tokenizers::{Model, Token};

#[derive(Debug, Clone)]
pub struct FastWordPiece {
    unk_id: u32,
    continuing_subword_prefix: String,
    max_input_chars_per_word: usize,
}

impl FastWordPiece {
    /// The rules of `model`, if it is WordPiece and its vocabulary holds its unknown token.
    pub fn of(model: &ModelWrapper) -> Option<Self> {
        let ModelWrapper::WordPiece(word_piece) = model else {
            return None;
        };
        Some(Self {
            unk_id: word_piece.token_to_id(&word_piece.unk_token)?,
            continuing_subword_prefix: word_piece.continuing_subword_prefix.clone(),
            max_input_chars_per_word: word_piece.max_input_chars_per_word,
        })
    }

    /// Appends the pieces of `word` to `out` (offsets in bytes of `word`, token strings left empty), looked
    /// up in `model`'s vocabulary: the longest known prefix, then the longest known `##` continuation, and
    /// so on; the whole word is one unknown token if any rest has no piece or it is too long.
    pub fn tokenize(
        &self,
        model: &impl Model,
        word: &str,
        piece: &mut String,
        out: &mut Vec<Token>,
    ) {
        let first = out.len();
        let unknown = |out: &mut Vec<Token>| {
            out.truncate(first);
            out.push(Token::new(self.unk_id, String::new(), (0, word.len())));
        };
        if word.chars().count() > self.max_input_chars_per_word {
            return unknown(out);
        }
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let id = loop {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.continuing_subword_prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(id) = model.token_to_id(piece) {
                    break Some(id);
                }
                end -= word[start..end]
                    .chars()
                    .next_back()
                    .map_or(1, char::len_utf8);
                if end == start {
                    break None;
                }
            };
            let Some(id) = id else {
                return unknown(out);
            };
            out.push(Token::new(id, String::new(), (start, end)));
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordpiece::WordPiece;

    /// The same ids and offsets as the crate's WordPiece: known continuations, a rest with no piece, a
    /// word over the length limit, several bytes a character.
    #[test]
    fn splits_as_the_crates_wordpiece() {
        let vocab = [
            "[UNK]", "un", "##aff", "##able", "a", "##b", "é", "##é", "aff",
        ];
        let model = WordPiece::builder()
            .vocab(WordPiece::read_bytes(vocab.join("\n").as_bytes()).unwrap())
            .max_input_chars_per_word(8)
            .build()
            .unwrap();
        let wrapper = ModelWrapper::WordPiece(model.clone());
        let fast = FastWordPiece::of(&wrapper).unwrap();
        let mut piece = String::new();
        for word in [
            "unaffable",
            "affable",
            "abbb",
            "abc",
            "éé",
            "aé",
            "unaffableb",
            "a",
        ] {
            let mut ours = Vec::new();
            fast.tokenize(&model, word, &mut piece, &mut ours);
            let theirs = model.tokenize(word).unwrap();
            let split =
                |tokens: &[Token]| tokens.iter().map(|t| (t.id, t.offsets)).collect::<Vec<_>>();
            assert_eq!(split(&ours), split(&theirs), "{word:?}");
        }
    }
}
