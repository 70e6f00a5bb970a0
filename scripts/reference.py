"""Writes the golden fixtures under tests/fixtures/ from the PyTorch reference.

Run:  python scripts/reference.py --model www/models/all-MiniLM-L6-v2 [--mlm www/models/minilm-l6-mlm]
          [--part all|bert|architectures|heads|albert-electra|mpnet|modernbert|deberta|matrix]
(needs torch, transformers, safetensors, numpy: `pip install -r scripts/requirements.txt`)

Everything written here is small and committed; the Rust tests compare against it.
"""

import argparse
import copy
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AlbertConfig, AlbertForMaskedLM, AlbertForQuestionAnswering, AlbertForSequenceClassification,
                          AlbertForTokenClassification, AlbertTokenizerFast, BertForQuestionAnswering,
                          BertConfig, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
                          BertModel, BertTokenizerFast, DebertaV2Config, DebertaV2ForMaskedLM,
                          DebertaV2ForQuestionAnswering, DebertaV2ForSequenceClassification,
                          DebertaV2ForTokenClassification, DebertaV2Tokenizer, DistilBertConfig, DistilBertForMaskedLM,
                          DistilBertForQuestionAnswering, DistilBertForSequenceClassification,
                          DistilBertForTokenClassification, DistilBertTokenizerFast, ElectraConfig, ElectraForMaskedLM,
                          ElectraForQuestionAnswering, ElectraForSequenceClassification, ElectraForTokenClassification,
                          MPNetConfig, MPNetForMaskedLM, MPNetForQuestionAnswering, MPNetForSequenceClassification,
                          MPNetForTokenClassification, MPNetTokenizerFast, ModernBertConfig,
                          ModernBertForMaskedLM, ModernBertForQuestionAnswering, ModernBertForSequenceClassification,
                          ModernBertForTokenClassification, PreTrainedModel,
                          PreTrainedTokenizerFast,
                          RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                          RobertaForSequenceClassification, RobertaForTokenClassification, RobertaTokenizerFast,
                          XLMRobertaConfig, XLMRobertaForMaskedLM, XLMRobertaForQuestionAnswering,
                          XLMRobertaForSequenceClassification, XLMRobertaForTokenClassification,
                          XLMRobertaTokenizerFast, pipeline)
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder
# transformers 5 dropped the question-answering pipeline but still ships its span scoring for document QA.
from transformers.pipelines.document_question_answering import select_starts_ends

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

SENTENCES = [
    "The animal didn't cross the street because it was too tired.",
    "The animal didn't cross the street because it was too narrow.",
    "A man is playing a guitar.",
    "Paris is the capital of France.",
    "Café au lait, naïve résumé — déjà vu!",
    "机器学习很有趣。",
]


def tokenizer_cases(rng: random.Random) -> list[str]:
    fixed = [
        "", " ", "Hello, world!", "HELLO world", "hello   world\t\tnew\nline",
        "Paris is the [MASK] of France.", "[MASK] [MASK] go", "a[MASK]b", "[mask] lower",
        "[CLS] [SEP] [PAD] [UNK] inside text", "don't won't it's", "e-mail user@example.com",
        "http://example.com/path?q=1&x=2", "3.14159 1,000,000 $5.99 50%", "Ünïcödé àccènts ñ ç ø å",
        "Straße Œuvre æsir", "ﬁ ligature ＦＵＬＬＷＩＤＴＨ", "東京は日本の首都です。", "中文字符一个一个",
        "한국어 텍스트", "日本語とEnglishの混在", "emoji 😀 👍🏽 🇫🇷 ❤️", "tab\there", "zero\u200bwidth",
        "soft\u00adhyphen", "ctrl\u0001\u0002chars\u007f", "nul\u0000byte", "bell\u0007", "carriage\rreturn",
        "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "supercalifragilisticexpialidocious" * 4, "a" * 120, "...!!!???", "«quotes» „german“ ‘single’",
        "math ∑ ∫ √ ≤ ≥ ≠", "Ελληνικά κείμενα", "Русский текст", "עברית", "العربية", "हिन्दी",
        "ไทย", "mixed123numbers456", "snake_case and camelCase", "C++ & C# | rust::fn()",
        "   leading and trailing   ", "\n\n\n", "\u3000ideographic space", "combining e\u0301 a\u0300",
        "Ⅻ ⅷ ①②③", "~`!@#$%^&*()-_=+[]{}\\|;:'\",.<>/?",
    ]
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " " * 8 + "\t\n",
        ".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`", "àáâãäåèéêëìíîïòóôõöùúûüñçÿ", "ÀÉÎÕÜÑ",
        "的一是不了人我在有他这中大来上国个到说们", "あいうえおカタカナ", "😀😂🥲👍🏽🎉🔥", "\u0000\u0001\u001f\u007f\u200b\u00ad\ufeff",
        "αβγδεζηθ", "абвгдежз",
    ]
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "[MASK]", "transformer",
             "attention", "embedding", "unbelievable", "re-enter", "co-operate", "naïve", "Zürich"]
    out = list(fixed)
    while len(out) < 300:
        kind = rng.random()
        if kind < 0.5:
            n = rng.randint(1, 40)
            s = "".join(rng.choice(rng.choice(pools)) for _ in range(n))
        else:
            n = rng.randint(1, 12)
            s = " ".join(rng.choice(words) if rng.random() < 0.7 else rng.choice(rng.choice(pools)) for _ in range(n))
        out.append(s)
    return out


def vocab_tokenizer(vocab: list[str]) -> BertTokenizerFast:
    """BertTokenizerFast built from vocab.txt alone (the slow-to-fast conversion path)."""
    tmp = Path(tempfile.mkdtemp())
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    tok = BertTokenizerFast.from_pretrained(tmp)
    shutil.rmtree(tmp)
    return tok


def write_tokenizer_fixture(model_dir: Path) -> None:
    fast = BertTokenizerFast.from_pretrained(model_dir)
    from_vocab = vocab_tokenizer((model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    cases = []
    for text in tokenizer_cases(random.Random(1234)):
        enc = fast(text, return_offsets_mapping=True, truncation=True, max_length=512)
        assert from_vocab(text, truncation=True, max_length=512)["input_ids"] == enc["input_ids"], text
        cases.append({"text": text, "ids": enc["input_ids"], "offsets": enc["offset_mapping"]})
    pair = fast("How old are you?", "I am six years old.", return_offsets_mapping=True)
    long_text = " ".join(["word"] * 700)
    long = fast(long_text, truncation=True, max_length=512)
    fixture = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "cases": cases,
        "pair": {"a": "How old are you?", "b": "I am six years old.", "ids": pair["input_ids"],
                 "token_type_ids": pair["token_type_ids"]},
        "long": {"text": long_text, "ids": long["input_ids"]},
    }
    (FIXTURES / "tokenizer.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=0))


@torch.no_grad()
def write_minilm_fixture(model_dir: Path) -> None:
    tok = BertTokenizerFast.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    tensors = {}
    for i, text in enumerate(SENTENCES):
        enc = tok(text, return_tensors="pt")
        out = model(**enc, output_attentions=True)
        tensors[f"hidden.{i}"] = out.last_hidden_state[0].numpy()
        tensors[f"attention.{i}.layer2"] = out.attentions[2][0].numpy()
    # sentence-transformers' pipeline: mean over real tokens, then L2 normalise; batched with padding.
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    tensors["embedding.mean"] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    tensors["embedding.cls"] = torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy()
    tensors["embedding.mean_raw"] = mean.numpy()
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              FIXTURES / "minilm_golden.safetensors")
    (FIXTURES / "minilm_golden.json").write_text(json.dumps({"sentences": SENTENCES}, ensure_ascii=False, indent=1))


TINY_TEXTS = ["Paris is the [MASK] of France.", "the [MASK] dog [MASK] over the fox", "[MASK]"]


def tiny_model(seed: int, hidden_act: str, tie: bool) -> BertForMaskedLM:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                        hidden_act=hidden_act, tie_word_embeddings=tie, layer_norm_eps=1e-12)
    model = BertForMaskedLM(config).eval()
    # Randomise biases and LayerNorm too, so a wrongly wired parameter shows in the logits.
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    return model


@torch.no_grad()
def write_tiny_fixture(name: str, model: PreTrainedModel, tok, dtype, shard: str | None,
                       texts: list[str] = TINY_TEXTS) -> None:
    """A masked-LM model dir plus its golden logits and transformers' own fill-mask top-5 for `texts`."""
    out_dir = FIXTURES / name
    shutil.rmtree(out_dir, ignore_errors=True)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    model = model.float()  # compute in f32 from the rounded weights, as webbert does
    fill = pipeline("fill-mask", model=model, tokenizer=tok)
    tensors, masks = {}, []
    for i, text in enumerate(texts):
        enc = tok(text, return_tensors="pt")
        logits = model(**enc).logits[0]
        tensors[f"logits.{i}"] = logits.numpy()
        # transformers' own fill-mask pipeline: scores, tokens and the filled-in sequences.
        result = fill(text, top_k=5)
        per_mask = result if isinstance(result[0], list) else [result]
        masks.append([[{"token_id": p["token"], "token": p["token_str"], "score": p["score"], "sequence": p["sequence"]}
                       for p in predictions] for predictions in per_mask])
        tensors[f"ids.{i}"] = enc["input_ids"][0].numpy().astype(np.float32)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              FIXTURES / f"{name}_golden.safetensors")
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps({"texts": texts, "fill_mask": masks}, indent=1))


# Tensors whose gradients the training test checks (Hugging Face names).
GRAD_TENSORS = [
    "bert.embeddings.word_embeddings.weight",  # tied: the lookup's gradient plus the decoder's
    "bert.embeddings.position_embeddings.weight",
    "bert.embeddings.LayerNorm.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.0.attention.self.value.bias",
    "bert.encoder.layer.1.intermediate.dense.bias",
    "bert.encoder.layer.1.output.dense.weight",
    "bert.encoder.layer.1.output.LayerNorm.weight",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.bias",
]


def write_gradient_fixture(tok: BertTokenizerFast) -> None:
    """One masked-LM step of the f32 tiny model: the loss over the chosen tokens and the gradients of
    GRAD_TENSORS. The corrupted inputs and labels are stored, so the test needs no random numbers."""
    model = BertForMaskedLM.from_pretrained(FIXTURES / "tiny-mlm", attn_implementation="eager").eval()
    texts = ["the quick brown fox jumps over the lazy dog", "a man is playing a guitar in the street"]
    enc = tok(texts, return_tensors="pt", padding=True)
    ids, labels = enc["input_ids"].clone(), torch.full_like(enc["input_ids"], -100)
    # [MASK] twice, a random token once, one left as it is: BERT's three kinds of chosen token.
    for (row, col), replacement in {(0, 2): tok.mask_token_id, (0, 7): 517, (1, 3): None, (1, 5): tok.mask_token_id}.items():
        labels[row, col] = ids[row, col]
        if replacement is not None:
            ids[row, col] = replacement
    out = model(input_ids=ids, attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"], labels=labels)
    out.loss.backward()
    params = dict(model.named_parameters())
    grads = {name: params[name].grad.numpy() for name in GRAD_TENSORS}
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in grads.items()},
              FIXTURES / "tiny-mlm_grad.safetensors")
    fixture = {"input_ids": ids.tolist(), "attention_mask": enc["attention_mask"].tolist(),
               "labels": labels.tolist(), "loss": out.loss.item(), "tensors": GRAD_TENSORS}
    (FIXTURES / "tiny-mlm_grad.json").write_text(json.dumps(fixture, indent=1))


MLM_SENTENCES = [
    "Paris is the [MASK] of France.",
    "The man went to the [MASK] to buy some milk.",
    "She plays the [MASK] in an orchestra.",
    "It was a cold [MASK] in the middle of winter.",
    "A dog is a [MASK] animal.",
]


@torch.no_grad()
def write_shipped_mlm_fixture(model_dir: Path) -> None:
    """The shipped fill-mask model (assembled by scripts/assemble-mlm.py) loads in transformers with no
    missing or unexpected tensors; its top-5 from transformers' own fill-mask pipeline become the fixture."""
    model, info = BertForMaskedLM.from_pretrained(model_dir, output_loading_info=True, attn_implementation="eager")
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{model_dir} does not load cleanly in transformers: {problems}"
    fill = pipeline("fill-mask", model=model.eval(), tokenizer=BertTokenizerFast.from_pretrained(model_dir))
    out = [[{"token_id": p["token"], "token": p["token_str"], "score": p["score"], "sequence": p["sequence"]}
            for p in fill(text, top_k=5)] for text in MLM_SENTENCES]
    (FIXTURES / "minilm-l6-mlm_golden.json").write_text(json.dumps({"texts": MLM_SENTENCES, "fill_mask": out}, indent=1))
    for text, predictions in zip(MLM_SENTENCES, out):
        print(text, "→", ", ".join(f"{p['token']} {p['score']:.2f}" for p in predictions))


def tiny_vocab(full: list[str]) -> list[str]:
    """The tiny models keep 1000 MiniLM vocabulary entries: specials, single characters, the commonest words."""
    return full[:104] + full[999:1600] + full[1996:2291]


def write_bert_fixtures(model_dir: Path, mlm_dir: Path | None) -> None:
    if mlm_dir:
        write_shipped_mlm_fixture(mlm_dir)
    write_tokenizer_fixture(model_dir)
    write_minilm_fixture(model_dir)

    vocab = tiny_vocab((model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    tiny_dir = FIXTURES / "tiny-mlm"
    tok = vocab_tokenizer(vocab)
    vocab_txt = "\n".join(vocab) + "\n"

    # f32, single file, decoder tied to the word embeddings; vocab.txt + tokenizer_config.json.
    write_tiny_fixture("tiny-mlm", tiny_model(0, "gelu", tie=True), tok, torch.float32, None)
    (tiny_dir / "vocab.txt").write_text(vocab_txt, encoding="utf-8")
    (tiny_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    # bf16, sharded, untied decoder, gelu_new; tokenizer.json.
    write_tiny_fixture("tiny-mlm-bf16-sharded", tiny_model(1, "gelu_new", tie=False), tok, torch.bfloat16, "60KB")
    tok.backend_tokenizer.save(str(FIXTURES / "tiny-mlm-bf16-sharded" / "tokenizer.json"))
    # f16, single file
    write_tiny_fixture("tiny-mlm-f16", tiny_model(2, "relu", tie=True), tok, torch.float16, None)
    (FIXTURES / "tiny-mlm-f16" / "vocab.txt").write_text(vocab_txt, encoding="utf-8")
    write_gradient_fixture(tok)


# ---------------------------------------------------------------------------------------------------------
# Other architectures: RoBERTa (byte-level BPE), XLM-RoBERTa (Unigram), DistilBERT; masked LM and
# sequence classification. Everything is random and built here, so nothing is downloaded.

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 of the BPE and Unigram tokenizers, as fairseq numbers them
MAX_TOKENS = 64  # the position table of every tiny model (RoBERTa's starts 2 rows later, at pad + 1)
ROBERTA_TEXTS = [t.replace("[MASK]", "<mask>") for t in TINY_TEXTS]

CLS_SINGLE = [
    "I loved this movie, it was wonderful!",
    "Café au lait, naïve résumé — déjà vu!",
    "The service was slow and the food was cold.",
    # ~40 common words: under MAX_TOKENS with every tiny tokenizer.
    "the city of new york was known for the music and the people who came there every year, and many of them "
    "said that it was the best place in the world to live, work and play with their family and friends.",
]
CLS_PAIRS = [
    ("How old are you?", "I am six years old."),
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("The cat sat on the mat.", "Dogs are loyal animals."),
]
RERANK_QUERY = "what is the capital of france"
RERANK_PASSAGES = [
    "Paris is the capital and largest city of France.",
    "The Eiffel Tower is in Paris.",
    "Berlin is the capital of Germany.",
    "France is a country in Western Europe, with a long history and many famous cities.",
    "Bananas are yellow.",
]


def english_corpus(vocab: list[str]) -> list[str]:
    """Lines of English-ish text to train the tiny BPE and Unigram tokenizers on: MiniLM's whole-word
    vocabulary entries (frequency ordered, so Zipf weights by rank look like real text), some capitalised,
    with punctuation, plus every fixture text (20 times), so that its words are likelier to be whole tokens."""
    rng = random.Random(7)
    words = [w for w in vocab if w.isascii() and w.isalpha()]
    weights = [1.0 / (rank + 10) for rank in range(len(words))]
    lines = []
    for _ in range(20000):
        line = rng.choices(words, weights, k=rng.randint(4, 14))
        # Capitals to start most lines and here and there inside (names), so "ĠParis"-like merges exist too.
        line = [w.capitalize() if rng.random() < (0.6 if i == 0 else 0.08) else w for i, w in enumerate(line)]
        lines.append(" ".join(line) + rng.choice([".", ".", ",", "!", "?", ""]))
    texts = (TINY_TEXTS + CLS_SINGLE + [t for pair in CLS_PAIRS for t in pair] + [RERANK_QUERY] + RERANK_PASSAGES)
    return lines + [t.replace("[MASK]", "") for t in texts] * 20


def canonical_pieces(pieces: list[list]) -> list[list]:
    """The Unigram trainer's pieces made the same on every run. Its scores differ in the last digits from run
    to run, and the characters it must keep but did not choose come last, 1e-4 apart, in hash order: those
    get the same scores in alphabetical order, then all are rounded and sorted best first (as SentencePiece)."""
    start = len(pieces) - 1
    while start > 0 and abs(pieces[start - 1][1] - pieces[start][1] - 1e-4) < 1e-7:
        start -= 1
    pieces[start:] = zip(sorted(p for p, _ in pieces[start:]), [s for _, s in pieces[start:]])
    return [[p, s] for p, s in sorted(((p, round(s, 6)) for p, s in pieces), key=lambda ps: (-ps[1], ps[0]))]


def with_mask_last(tokenizer: Tokenizer) -> Tokenizer:
    """Appends <mask> as the last id, in the model's vocabulary and as a special added token that eats the
    space before it (lstrip), as roberta-base and xlm-roberta-base have it."""
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    if isinstance(vocab, dict):  # BPE: token -> id
        vocab["<mask>"] = len(vocab)
    else:  # Unigram: [piece, score] in id order
        vocab[len(SPECIALS):] = canonical_pieces(vocab[len(SPECIALS):]) + [["<mask>", 0.0]]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    return tokenizer


def bpe_tokenizer(corpus: list[str]) -> RobertaTokenizerFast:
    """A 1000-id byte-level BPE like roberta-base's: no normaliser, ByteLevel pre-tokenizer (no prefix space)
    and decoder, RobertaProcessing <s> A </s></s> B </s>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=999, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = with_mask_last(tokenizer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                            add_prefix_space=False)
    return RobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=MAX_TOKENS,
                                mask_token=AddedToken("<mask>", lstrip=True, special=True))


def unigram_tokenizer(corpus: list[str]) -> XLMRobertaTokenizerFast:
    """A 1000-id SentencePiece-style Unigram like xlm-roberta-base's: NFKC (XLM-R's precompiled charsmap is
    nmt_nfkc), Metaspace "▁" pre-tokenizer and decoder, <s> A </s></s> B </s>."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=999, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False))
    tokenizer = with_mask_last(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return XLMRobertaTokenizerFast(tokenizer_object=tokenizer, model_max_length=MAX_TOKENS,
                                   mask_token=AddedToken("<mask>", lstrip=True, special=True))


def perturbed(model_class, config, seed: int) -> PreTrainedModel:
    """A random tiny model, eager attention, with every parameter (biases, LayerNorms) moved off its init."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = model_class(config).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.2)
    return model


def bert_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      max_position_embeddings=MAX_TOKENS, type_vocab_size=2, layer_norm_eps=1e-12, **kw)


def roberta_config(config_class, vocab_size: int, **kw):
    # Positions start at pad_token_id + 1 = 2, hence 2 more rows; eps 1e-5 as roberta-base and xlm-roberta-base.
    return config_class(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=MAX_TOKENS + 2, type_vocab_size=1, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **kw)


def distilbert_config(**kw) -> DistilBertConfig:
    return DistilBertConfig(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                            max_position_embeddings=MAX_TOKENS, activation="gelu", pad_token_id=0, **kw)


def save_tokenizer(tok, out_dir: Path, texts: tuple[str, ...] = (), pairs: tuple[tuple[str, str], ...] = ()) -> None:
    """tokenizer.json (what webbert reads) and tokenizer_config.json; the file must encode as `tok` does."""
    tok.save_pretrained(out_dir)
    saved = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    for text in ROBERTA_TEXTS + TINY_TEXTS + CLS_SINGLE + RERANK_PASSAGES + list(texts):
        assert saved.encode(text).ids == tok(text)["input_ids"], (out_dir, text)
    for a, b in pairs:
        assert saved.encode(a, b).ids == tok(a, b)["input_ids"], (out_dir, a, b)
    for a, b in CLS_PAIRS + [(RERANK_QUERY, p) for p in RERANK_PASSAGES]:
        assert saved.encode(a, b).ids == tok(a, b)["input_ids"], (out_dir, a, b)
        assert len(saved.encode(a, b).ids) <= MAX_TOKENS
    assert len(saved.encode(CLS_SINGLE[-1]).ids) <= MAX_TOKENS


def reloaded(out_dir: Path, model_class) -> PreTrainedModel:
    """The saved model loaded back as a user would, eager attention; nothing missing, nothing unexpected."""
    model, info = model_class.from_pretrained(out_dir, attn_implementation="eager", output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{out_dir} does not load cleanly: {problems}"
    return model.eval()


def write_mlm_architecture(name: str, model: PreTrainedModel, tok, texts: list[str]) -> None:
    write_tiny_fixture(name, model, tok, torch.float32, None, texts)
    save_tokenizer(tok, FIXTURES / name)
    # What the fixture holds is what the saved files give back.
    back = reloaded(FIXTURES / name, type(model))
    with torch.no_grad():
        for i, text in enumerate(texts):
            torch.testing.assert_close(back(**tok(text, return_tensors="pt")).logits[0],
                                       model(**tok(text, return_tensors="pt")).logits[0])


@torch.no_grad()
def write_cls_fixture(name: str, model: PreTrainedModel, tok, rerank: bool = False) -> None:
    """Raw logits of each input alone and transformers' text-classification pipeline with every label."""
    out_dir = FIXTURES / name
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tok, out_dir)
    model = reloaded(out_dir, type(model))
    classify = pipeline("text-classification", model=model, tokenizer=tok)

    # What the pipeline applies by default (transformers' TextClassificationPipeline.postprocess).
    config = model.config
    function = "sigmoid" if config.problem_type == "multi_label_classification" or config.num_labels == 1 else "softmax"

    def entry(inputs: dict) -> dict:
        enc = tok(inputs["text"], inputs.get("text_pair"), return_tensors="pt")
        logits = model(**enc).logits[0]
        result = classify(inputs, top_k=None)
        # The pipeline must have run on the same tensors (token_type_ids included, for BERT pairs).
        scores = logits.softmax(-1) if function == "softmax" else logits.sigmoid()
        assert all(abs(r["score"] - scores[config.label2id[r["label"]]].item()) < 1e-6 for r in result), (name, inputs)
        return {**inputs, "ids": enc["input_ids"][0].tolist(), "logits": logits.tolist(), "pipeline": result}

    fixture = {"single": [entry({"text": t}) for t in CLS_SINGLE],
               "pairs": [entry({"text": a, "text_pair": b}) for a, b in CLS_PAIRS],
               "function_to_apply": function}
    if rerank:
        # sentence-transformers' CrossEncoder.predict: every (query, passage) in one padded batch, sigmoid.
        enc = tok([RERANK_QUERY] * len(RERANK_PASSAGES), RERANK_PASSAGES, padding=True, truncation=True,
                  return_tensors="pt")
        scores = model(**enc).logits[:, 0].sigmoid()
        alone = torch.stack([model(**tok(RERANK_QUERY, p, return_tensors="pt")).logits[0, 0].sigmoid()
                             for p in RERANK_PASSAGES])
        torch.testing.assert_close(scores, alone)  # padding changes nothing
        fixture["rerank"] = {"query": RERANK_QUERY, "passages": RERANK_PASSAGES, "scores": scores.tolist()}
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1))


def wordpiece_tokenizers(full: list[str]) -> tuple[BertTokenizerFast, DistilBertTokenizerFast]:
    """The tiny vocabulary's WordPiece as BERT's and as DistilBERT's tokenizer class."""
    backend = vocab_tokenizer(tiny_vocab(full)).backend_tokenizer
    wordpiece = BertTokenizerFast(tokenizer_object=backend, model_max_length=MAX_TOKENS)
    # DistilBERT's tokenizer is BERT's WordPiece without token_type_ids (DistilBERT has no segment embeddings).
    distil = DistilBertTokenizerFast(tokenizer_object=backend, model_max_length=MAX_TOKENS)
    return wordpiece, distil


def write_architecture_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    wordpiece, distil = wordpiece_tokenizers(full)
    corpus = english_corpus(full)
    bpe, unigram = bpe_tokenizer(corpus), unigram_tokenizer(corpus)
    for tok in (bpe, unigram):
        assert len(tok) == 1000 and tok.mask_token_id == 999, (type(tok), len(tok), tok.mask_token_id)
        assert tok.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3]
        assert tok("Paris is the <mask> of France.")["input_ids"].count(999) == 1

    write_mlm_architecture("tiny-roberta", perturbed(
        RobertaForMaskedLM, roberta_config(RobertaConfig, len(bpe), tie_word_embeddings=True), 10), bpe, ROBERTA_TEXTS)
    write_mlm_architecture("tiny-xlm-roberta", perturbed(
        XLMRobertaForMaskedLM, roberta_config(XLMRobertaConfig, len(unigram), tie_word_embeddings=True), 11),
        unigram, ROBERTA_TEXTS)
    write_mlm_architecture("tiny-distilbert", perturbed(DistilBertForMaskedLM, distilbert_config(), 12), distil,
                           TINY_TEXTS)

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    write_cls_fixture("tiny-bert-cls", perturbed(
        BertForSequenceClassification, bert_config(**labels(["negative", "neutral", "positive"])), 20), wordpiece)
    write_cls_fixture("tiny-roberta-cls", perturbed(
        RobertaForSequenceClassification, roberta_config(RobertaConfig, len(bpe), **labels(["NEGATIVE", "POSITIVE"])),
        21), bpe)
    write_cls_fixture("tiny-distilbert-cls", perturbed(
        DistilBertForSequenceClassification,
        distilbert_config(problem_type="multi_label_classification", **labels(["toxic", "insult", "threat", "obscene"])),
        22), distil)
    # A cross-encoder like cross-encoder/ms-marco-MiniLM-L6-v2: one logit, which the pipeline puts through a sigmoid.
    write_cls_fixture("tiny-reranker", perturbed(BertForSequenceClassification, bert_config(num_labels=1), 23),
                      wordpiece, rerank=True)


# ---------------------------------------------------------------------------------------------------------
# Task heads: token classification (NER) and extractive question answering, on the same tiny encoders and
# tokenizers. The random heads are nudged (biases) so that the pipelines' postprocessing has real work to do.

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
NER_TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is a company based in New York City.",
    "José García visited Zürich.",
    "  Sarah   met Tom ,at   the U.N. in Paris (France)!!  ",
    # ~40 common words: under MAX_TOKENS with both tokenizers.
    "John and his family came from the United States to New York City after the war, and he said that the national "
    "team of the university played there every year with many other people who had known him for a long time.",
]
# Each NER model's seed and what is added to its "O" bias: random heads tag most tokens as entities, too few
# with more; these (found by trying seeds in turn) give the fixture texts what ner_coverage asks for.
NER_HEADS = {"tiny-bert-ner": (30, 1.5), "tiny-roberta-ner": (32, 2.0), "tiny-modernbert-ner": (35, 0.0),
             "tiny-deberta-v2-ner": (37, 0.0)}
QA_CASES = [
    ("Where did John live?", "John was born in the city of York in the north, but after the war he moved with his "
                             "family to New York, where he lived for many years and made music."),
    ("Who visited Zürich?", "José García, a café owner, visited Zürich with his family last year and said it was "
                            "the best city in the world."),
    ("What is the capital of France?", "Paris   is the   capital of France.  It is the largest city   in the state, "
                                       "and   many people from the world   come there every year."),
]
QA_LONG = ("When did the team first play?",
           "The national team of the university was known in the city for many years. It first played in 1920, "
           "when John and his brother came back from the war and made a team with the people of their school. "
           "After the second war the team played every year against other schools in the state, and in 1960 it "
           "won the national game for the first time. Many people still say that this was the best team the city "
           "has had, and the university now has a house where you can see the old game and the team.")
QA_LONG_ARGS = {"max_seq_len": 48, "doc_stride": 16, "max_answer_len": 15}
# Seeds whose answers on QA_LONG sum spans found in several chunks (for RoBERTa also "The" and "the" at
# different places: the pipeline merges answers by their lowercased text).
QA_SEEDS = {"tiny-distilbert-qa": 44, "tiny-roberta-qa": 42, "tiny-modernbert-qa": 46, "tiny-deberta-v2-qa": 47}


def plain(value):
    """A pipeline's output with numpy scalars made Python's, for json."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def ner_coverage(tok, cases: list[dict]) -> dict:
    """Which texts (indices) show what the NER fixture must exercise: tokens left out as "O", B-X then I-X
    in one group, and one word of several tokens tagged as one entity."""
    found = {"left_out": [], "b_then_i": [], "subword_group": []}
    for i, case in enumerate(cases):
        word_ids = tok(case["text"]).word_ids()
        tagged = {e["index"]: e["entity"] for e in case["none"]}
        if len(tagged) < sum(w is not None for w in word_ids) and tagged:
            found["left_out"].append(i)
        for index, entity in tagged.items():
            after = tagged.get(index + 1, "")
            if after[:2] != "I-" or after[2:] != entity.split("-", 1)[-1]:
                continue  # the pair does not join into one group
            if entity.startswith("B-") and i not in found["b_then_i"]:
                found["b_then_i"].append(i)
            if word_ids[index] == word_ids[index + 1] and i not in found["subword_group"]:
                found["subword_group"].append(i)
    return found


@torch.no_grad()
def write_ner_fixture(name: str, model: PreTrainedModel, tok) -> dict:
    """Raw logits per token and transformers' token-classification pipeline, "none" and "simple" aggregation."""
    out_dir = FIXTURES / name
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tok, out_dir, tuple(NER_TEXTS))
    model = reloaded(out_dir, type(model))
    ner = pipeline("token-classification", model=model, tokenizer=tok)
    cases = []
    for text in NER_TEXTS:
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        assert enc["input_ids"].shape[1] <= MAX_TOKENS, (name, text)
        cases.append({"text": text, "ids": enc["input_ids"][0].tolist(), "offsets": offsets,
                      "logits": model(**enc).logits[0].tolist(),
                      "none": plain(ner(text, aggregation_strategy="none")),
                      "simple": plain(ner(text, aggregation_strategy="simple"))})
    coverage = ner_coverage(tok, cases)
    assert all(coverage.values()), (name, coverage)
    # No near tie between the two likeliest labels of a token: an f32 reimplementation gets the same tags.
    for case in cases:
        top2 = torch.tensor(case["logits"]).topk(2).values
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-3, (name, case["text"], (top2[:, 0] - top2[:, 1]).min())
    fixture = {"labels": NER_LABELS, "cases": cases}
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1))
    return coverage


def answer_question(model: PreTrainedModel, tok, question: str, context: str, top_k: int = 1,
                    max_seq_len: int | None = None, doc_stride: int | None = None, max_answer_len: int = 15,
                    handle_impossible_answer: bool = False, align_to_words: bool = True, gaps: list | None = None):
    """transformers' question-answering pipeline as 4.57 had it (5.x removed it): its fast-tokenizer preprocess,
    _forward and postprocess, line for line, around transformers' own select_starts_ends. Returns the
    pipeline's answer(s) and each chunk's ids and logits. `gaps`, if given, gets the relative score gaps at
    every cut the pipeline makes (kept candidates of a chunk, answers returned), to keep the fixture off ties."""
    if max_seq_len is None:
        max_seq_len = min(tok.model_max_length, 384)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    assert doc_stride <= max_seq_len and tok.padding_side == "right"  # question first, context truncated
    enc = tok(text=question, text_pair=context, padding="do_not_pad", truncation="only_second",
              max_length=max_seq_len, stride=doc_stride, return_token_type_ids=True, return_overflowing_tokens=True,
              return_offsets_mapping=True, return_special_tokens_mask=True)
    min_null_score, answers, chunks = 1000000, [], []
    for span in range(len(enc["input_ids"])):
        ids = enc["input_ids"][span]
        # p_mask: 1 where the answer cannot be (question, special tokens), 0 on the context and on the CLS token.
        p_mask = [int(sequence != 1) for sequence in enc.sequence_ids(span)]
        for i, token in enumerate(ids):
            if token == tok.cls_token_id:
                p_mask[i] = 0
        inputs = {k: torch.tensor([enc[k][span]]) for k in tok.model_input_names}  # no token_type_ids for these
        out = model(**inputs)
        start, end = out.start_logits.numpy(), out.end_logits.numpy()
        chunks.append({"ids": ids, "start_logits": start[0].tolist(), "end_logits": end[0].tolist()})
        # More candidates than asked for, since spans widened to whole words may coincide and are merged below.
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        starts, ends, scores, min_null_score = select_starts_ends(
            start, end, np.array([p_mask]), inputs["attention_mask"].numpy(), min_null_score, pre_topk,
            handle_impossible_answer, max_answer_len)
        if gaps is not None:  # not transformers': the best candidate left out against the last one kept
            _, _, more, _ = select_starts_ends(start, end, np.array([p_mask]), inputs["attention_mask"].numpy(),
                                               1000000, pre_topk + 1, False, max_answer_len)
            gaps.append((more[pre_topk - 1] - more[pre_topk]) / more[pre_topk - 1])
        encoding = enc[span]
        for s, e, score in zip(starts, ends, scores):
            if align_to_words:
                try:
                    first = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
                    last = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
                except Exception:  # as transformers: tokenizers without words keep the token offsets
                    first, last = encoding.offsets[s][0], encoding.offsets[e][1]
            else:
                first, last = encoding.offsets[s][0], encoding.offsets[e][1]
            text = context[first:last]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same:
                same["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": first, "end": last, "answer": text})
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda a: a["score"], reverse=True)
    if gaps is not None:
        ranked = [a["score"] for a in answers[:top_k + 1]]
        gaps += [(a - b) / a for a, b in zip(ranked, ranked[1:])]
    answers = answers[:top_k]
    return (answers[0] if len(answers) == 1 else answers), chunks


@torch.no_grad()
def write_qa_fixture(name: str, model: PreTrainedModel, tok) -> None:
    """Start/end logits of single-chunk cases and the question-answering pipeline's top 1 and top 3; one long
    context split into several overlapping chunks."""
    out_dir = FIXTURES / name
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tok, out_dir, (QA_LONG[1],), tuple(QA_CASES) + (QA_LONG,))
    model = reloaded(out_dir, type(model))
    cases, gaps = [], []
    for question, context in QA_CASES:
        top1, chunks = answer_question(model, tok, question, context, gaps=gaps)
        top3, _ = answer_question(model, tok, question, context, top_k=3, gaps=gaps)
        assert len(chunks) == 1 and len(top3) == 3, (name, question, len(chunks))
        assert chunks[0]["ids"] == tok(question, context, truncation="only_second")["input_ids"]
        cases.append({"question": question, "context": context, "ids": chunks[0]["ids"],
                      "start_logits": chunks[0]["start_logits"], "end_logits": chunks[0]["end_logits"],
                      "top1": top1, "top3": top3})
    question, context = QA_LONG
    seq_args = {k: QA_LONG_ARGS[k] for k in ("max_seq_len", "doc_stride")}
    top3, chunks = answer_question(model, tok, question, context, top_k=3, gaps=gaps, **seq_args)
    top1, _ = answer_question(model, tok, question, context, gaps=gaps, **seq_args)
    assert len(chunks) >= 3 and len(top3) == 3, (name, len(chunks))
    # Every cut is far from a tie, so that an f32 reimplementation keeps and returns the same answers.
    assert min(gaps) > 1e-4, (name, sorted(gaps)[:3])
    fixture = {"pipeline": "transformers 4.57 question-answering (removed in 5.x), as answer_question in "
                           "scripts/reference.py",
               "cases": cases,
               "long": {"question": question, "context": context, **QA_LONG_ARGS, "top3": top3,
                        "top1": top1, "chunks": [c["ids"] for c in chunks]}}
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1))


def ner_model(name: str, model_class, config) -> PreTrainedModel:
    """A perturbed token classifier, "O" made likelier as NER_HEADS says."""
    seed, shift = NER_HEADS[name]
    model = perturbed(model_class, config, seed)
    with torch.no_grad():
        model.classifier.bias[NER_LABELS.index("O")] += shift
    return model


def write_head_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    wordpiece, distil = wordpiece_tokenizers(full)
    bpe = bpe_tokenizer(english_corpus(full))  # the one of tiny-roberta
    labels = {"id2label": dict(enumerate(NER_LABELS)), "label2id": {n: i for i, n in enumerate(NER_LABELS)}}
    for name, model, tok in [
        ("tiny-bert-ner", ner_model("tiny-bert-ner", BertForTokenClassification, bert_config(**labels)), wordpiece),
        ("tiny-roberta-ner", ner_model("tiny-roberta-ner", RobertaForTokenClassification,
                                       roberta_config(RobertaConfig, len(bpe), **labels)), bpe)]:
        print(name, "texts showing each case:", write_ner_fixture(name, model, tok))
    write_qa_fixture("tiny-distilbert-qa", perturbed(DistilBertForQuestionAnswering, distilbert_config(),
                                                     QA_SEEDS["tiny-distilbert-qa"]), distil)
    write_qa_fixture("tiny-roberta-qa", perturbed(RobertaForQuestionAnswering, roberta_config(RobertaConfig, len(bpe)),
                                                  QA_SEEDS["tiny-roberta-qa"]), bpe)


# ---------------------------------------------------------------------------------------------------------
# ALBERT and ELECTRA: word embeddings narrower than the encoder (embedding_size 16, hidden 32), projected up
# before the first layer; ALBERT shares one layer across the depth. Masked LM and sequence classification.

ALBERT_SPECIALS = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, as albert-base-v2 numbers them


def albert_tokenizer(corpus: list[str]) -> AlbertTokenizerFast:
    """A 1000-id SentencePiece-style Unigram laid out as albert-base-v2's tokenizer.json (what transformers'
    AlbertTokenizer builds, less the precompiled charsmap): `` and '' made ", NFKD, accents stripped,
    lowercased; whitespace split then Metaspace "▁"; [CLS] A [SEP] (type 0) B [SEP] (type 1); [MASK] eats the
    space before it (lstrip), as albert-base-v2's mask token does."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(), normalizers.StripAccents(),
        normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=1000, special_tokens=ALBERT_SPECIALS, unk_token="<unk>", show_progress=False))
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab[len(ALBERT_SPECIALS):] = canonical_pieces(vocab[len(ALBERT_SPECIALS):])
    for added in spec["added_tokens"]:
        added["lstrip"] = added["content"] == "[MASK]"
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    # transformers 5's AlbertTokenizer leaves token_type_ids out of its inputs; 4.x's AlbertTokenizerFast gave
    # them, and ALBERT was trained with segments: ask for them, so that pairs reach the model with B as type 1.
    return AlbertTokenizerFast(tokenizer_object=tokenizer, model_max_length=MAX_TOKENS,
                               model_input_names=["input_ids", "token_type_ids", "attention_mask"],
                               mask_token=AddedToken("[MASK]", lstrip=True, special=True))


def albert_config(**kw) -> AlbertConfig:
    # One layer group of one layer, applied num_hidden_layers times; gelu_new and eps as albert-base-v2.
    return AlbertConfig(vocab_size=1000, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_hidden_groups=1,
                        inner_group_num=1, num_attention_heads=4, intermediate_size=64, hidden_act="gelu_new",
                        max_position_embeddings=MAX_TOKENS, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
                        bos_token_id=2, eos_token_id=3, **kw)


def electra_config(**kw) -> ElectraConfig:
    return ElectraConfig(vocab_size=1000, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, hidden_act="gelu", max_position_embeddings=MAX_TOKENS, type_vocab_size=2,
                         layer_norm_eps=1e-12, pad_token_id=0, **kw)


@torch.no_grad()
def check_fill_mask_gaps(name: str, tok, texts: list[str], k: int = 5) -> None:
    """No near tie among the k + 1 likeliest tokens at a mask: an f32 reimplementation picks the same top k
    in the same order."""
    model = reloaded(FIXTURES / name, {"tiny-albert": AlbertForMaskedLM, "tiny-electra-generator": ElectraForMaskedLM,
                                       "tiny-mpnet": MPNetForMaskedLM, "tiny-modernbert": ModernBertForMaskedLM,
                                       "tiny-deberta-v2": DebertaV2ForMaskedLM}[name])
    for text in texts:
        enc = tok(text, return_tensors="pt")
        logits = model(**enc).logits[0][enc["input_ids"][0] == tok.mask_token_id]
        top = logits.topk(k + 1).values
        assert (top[:, :-1] - top[:, 1:]).min() > 1e-4, (name, text, (top[:, :-1] - top[:, 1:]).min())


@torch.no_grad()
def check_segments_matter(name: str, model_class, tok) -> None:
    """The pairs' token_type_ids change the logits (the segment embeddings are wired in)."""
    model = reloaded(FIXTURES / name, model_class)
    for a, b in CLS_PAIRS:
        enc = tok(a, b, return_tensors="pt")
        assert enc["token_type_ids"].max() == 1, (name, a, b)
        zeros = {**enc, "token_type_ids": torch.zeros_like(enc["token_type_ids"])}
        assert not torch.allclose(model(**enc).logits, model(**zeros).logits, atol=1e-4), (name, a, b)


def write_albert_electra_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    wordpiece, _ = wordpiece_tokenizers(full)
    albert = albert_tokenizer(english_corpus(full))
    assert len(albert) == 1000 and albert.convert_tokens_to_ids(ALBERT_SPECIALS) == [0, 1, 2, 3, 4], len(albert)
    assert (albert.pad_token_id, albert.unk_token_id, albert.cls_token_id, albert.sep_token_id,
            albert.mask_token_id) == (0, 1, 2, 3, 4)
    for text in TINY_TEXTS:
        ids = albert(text)["input_ids"]
        assert ids.count(4) == text.count("[MASK]") and ids[0] == 2 and ids[-1] == 3, (text, ids)

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    write_mlm_architecture("tiny-albert", perturbed(AlbertForMaskedLM, albert_config(), 50), albert, TINY_TEXTS)
    check_fill_mask_gaps("tiny-albert", albert, TINY_TEXTS)
    write_cls_fixture("tiny-albert-cls", perturbed(
        AlbertForSequenceClassification, albert_config(**labels(["negative", "neutral", "positive"])), 51), albert)
    check_segments_matter("tiny-albert-cls", AlbertForSequenceClassification, albert)

    write_mlm_architecture("tiny-electra-generator", perturbed(ElectraForMaskedLM, electra_config(), 52), wordpiece,
                           TINY_TEXTS)
    check_fill_mask_gaps("tiny-electra-generator", wordpiece, TINY_TEXTS)
    write_cls_fixture("tiny-electra-cls", perturbed(
        ElectraForSequenceClassification, electra_config(**labels(["NEGATIVE", "POSITIVE"])), 53), wordpiece)
    check_segments_matter("tiny-electra-cls", ElectraForSequenceClassification, wordpiece)


# ---------------------------------------------------------------------------------------------------------
# MPNet, the architecture of sentence-transformers/all-mpnet-base-v2: positions as RoBERTa's (from pad + 1), no
# segment embeddings, and a T5-style relative position bias (32 buckets, max distance 128) computed once and
# added to every layer's attention scores. Masked LM (with sentence embeddings) and sequence classification.

MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in microsoft/mpnet-base; "<mask>" is the last id
# 130 position rows from pad + 1 = 2: 128 tokens, so relative distances reach every log-spaced bucket (91 and up
# is the last one).
MPNET_MAX_TOKENS = 128
# ~100 tokens with the tiny vocabulary (at least 92 are needed to use every bucket); "{}" is the masked word.
MPNET_LONG = ("the city of new york was known for the music and the people who came there. many of them said that "
              "it was the best place in the world to work. after the war the national team of the university played "
              "in the city each year, and in 1960 it won the game for the first time. people still say that this "
              "was the {} team the city has had, and the school now has a house where you can see the old game and "
              "the team.")
MPNET_TEXTS = ROBERTA_TEXTS + [MPNET_LONG.format("<mask>")]
# Embedded in one right-padded batch, as sentence-transformers does: different lengths, one [UNK] ("—").
MPNET_SENTENCES = ["A man is playing a guitar.", MPNET_LONG.format("best"),
                   "Café au lait, naïve résumé — déjà vu!", "The animal didn't cross the street because it was too tired."]
# The classifier's seed (found by trying seeds in turn): each label is the pipeline's top one for some input.
MPNET_CLS_SEED = 73
# sentence-transformers' files, as all-mpnet-base-v2 ships them (2_Normalize has no files).
ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def mpnet_tokenizer(full: list[str]) -> MPNetTokenizerFast:
    """MPNet's layout of BERT's uncased WordPiece: <s> <pad> </s> <unk>, the tiny vocabulary (whose [PAD], [UNK],
    [CLS], [SEP], [MASK] stay ordinary entries at 4 and 104..107, as in all-mpnet-base-v2), then <mask>. As
    transformers' MPNetTokenizer (and its slow-to-fast converter): unknown pieces are "[UNK]" (104), not "<unk>";
    BERT normaliser and pre-tokenizer; <s> A </s> and <s> A </s></s> B </s>; <mask> eats the space before it."""
    vocab = MPNET_SPECIALS + tiny_vocab(full) + ["<mask>"]
    return MPNetTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=MPNET_MAX_TOKENS)


def mpnet_config(vocab_size: int, **kw) -> MPNetConfig:
    # eps 1e-5, gelu, 32 buckets as all-mpnet-base-v2; positions start at pad_token_id + 1 = 2, hence 2 more rows.
    return MPNetConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, hidden_act="gelu", max_position_embeddings=MPNET_MAX_TOKENS + 2,
                       layer_norm_eps=1e-5, relative_attention_num_buckets=32, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, **kw)


def mpnet_buckets(length: int) -> list[int]:
    """The relative position buckets a sequence of `length` tokens uses (transformers' own bucketing)."""
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]
    return sorted(set(MPNetEncoder.relative_position_bucket(relative).flatten().tolist()))


@torch.no_grad()
def check_position_bias_matters(name: str, model_class, tok, texts: list[str]) -> None:
    """The relative position bias changes the outputs (so a wrongly bucketed or missing bias shows)."""
    model = reloaded(FIXTURES / name, model_class)
    logits = [model(**tok(text, return_tensors="pt")).logits for text in texts]
    model.mpnet.encoder.relative_attention_bias.weight.zero_()
    for text, before in zip(texts, logits):
        after = model(**tok(text, return_tensors="pt")).logits
        assert (after - before).abs().max() > 1e-2, (name, text, (after - before).abs().max())


def write_sentence_goldens(name: str, out_dir: Path, tensors: dict, ids: list, hidden_size: int) -> None:
    """The per-sentence goldens beside the fixture's, and sentence-transformers' files (mean pooling,
    normalised) in the model's folder."""
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
              FIXTURES / f"{name}_golden.safetensors")
    fixture = json.loads((FIXTURES / f"{name}_golden.json").read_text())
    fixture.update({"sentences": MPNET_SENTENCES, "sentence_ids": ids})
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps(fixture, indent=1))
    (out_dir / "modules.json").write_text(json.dumps(ST_MODULES, indent=2))
    (out_dir / "1_Pooling").mkdir()
    (out_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (out_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MPNET_MAX_TOKENS,
                                                                    "do_lower_case": False}, indent=2))


@torch.no_grad()
def padded_mean_embeddings(encoder, tok, tensors: dict) -> torch.Tensor:
    """MPNET_SENTENCES in one right-padded batch: their last hidden states mean-pooled over the real tokens and L2
    normalised (sentence-transformers' Transformer, mean Pooling, Normalize) into tensors["embedding.mean"]; returns
    the batch's last hidden state."""
    enc = tok(MPNET_SENTENCES, return_tensors="pt", padding=True)
    assert tok.padding_side == "right" and len(set(enc["attention_mask"].sum(1).tolist())) == len(MPNET_SENTENCES)
    hidden = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    tensors["embedding.mean"] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return hidden


@torch.no_grad()
def write_mlm_embeddings(name: str, model_class, tok) -> None:
    """sentence-transformers' pipeline on the masked LM's encoder (modules.json: Transformer, mean Pooling,
    Normalize): the sentences in one right-padded batch, mean over real tokens, L2 normalised; and each
    sentence's last hidden state alone. Added to the masked-LM fixture's files."""
    out_dir = FIXTURES / name
    encoder = reloaded(out_dir, model_class).base_model
    tensors = dict(load_file(FIXTURES / f"{name}_golden.safetensors"))
    hidden = padded_mean_embeddings(encoder, tok, tensors)
    ids = []
    for i, sentence in enumerate(MPNET_SENTENCES):
        alone = tok(sentence, return_tensors="pt")
        tensors[f"hidden.{i}"] = encoder(**alone).last_hidden_state[0].numpy()
        ids.append(alone["input_ids"][0].tolist())
        # Padding changes nothing on the real tokens.
        torch.testing.assert_close(hidden[i, :len(ids[-1])], encoder(**alone).last_hidden_state[0])
    write_sentence_goldens(name, out_dir, tensors, ids, encoder.config.hidden_size)


def write_mpnet_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = mpnet_tokenizer(full)
    assert len(tok) == 1005 and tok.convert_tokens_to_ids(MPNET_SPECIALS) == [0, 1, 2, 3]
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id) == \
        (0, 1, 2, 104, 1004), tok
    # BERT's specials are ordinary entries, where all-mpnet-base-v2 has them: a runtime must take "<mask>".
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [4, 104, 105, 106, 107]
    for text in MPNET_TEXTS:
        ids = tok(text)["input_ids"]
        assert ids.count(1004) == text.count("<mask>") and ids[0] == 0 and ids[-1] == 2, (text, ids)
    long_ids = tok(MPNET_TEXTS[-1])["input_ids"]
    assert 92 <= len(long_ids) <= MPNET_MAX_TOKENS, len(long_ids)
    assert mpnet_buckets(len(long_ids)) == [b for b in range(32) if b != 16]  # 16 would be "after, distance 0"
    assert any(104 in tok(text)["input_ids"] for text in MPNET_SENTENCES)  # unknown -> [UNK], not <unk>

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    save_args = {"texts": tuple(MPNET_TEXTS + MPNET_SENTENCES)}
    write_mlm_architecture("tiny-mpnet", perturbed(MPNetForMaskedLM, mpnet_config(len(tok)), 60), tok, MPNET_TEXTS)
    save_tokenizer(tok, FIXTURES / "tiny-mpnet", **save_args)
    check_fill_mask_gaps("tiny-mpnet", tok, MPNET_TEXTS)
    check_position_bias_matters("tiny-mpnet", MPNetForMaskedLM, tok, MPNET_TEXTS)
    write_mlm_embeddings("tiny-mpnet", MPNetForMaskedLM, tok)
    write_cls_fixture("tiny-mpnet-cls", perturbed(
        MPNetForSequenceClassification, mpnet_config(len(tok), **labels(["NEGATIVE", "POSITIVE"])),
        MPNET_CLS_SEED), tok)
    save_tokenizer(tok, FIXTURES / "tiny-mpnet-cls", **save_args)
    cases = json.loads((FIXTURES / "tiny-mpnet-cls_golden.json").read_text())
    winners = [case["pipeline"][0]["label"] for case in cases["single"] + cases["pairs"]]
    assert set(winners) == {"NEGATIVE", "POSITIVE"}, winners
    check_position_bias_matters("tiny-mpnet-cls", MPNetForSequenceClassification, tok, CLS_SINGLE)
    for text in MPNET_TEXTS + MPNET_SENTENCES:
        length = len(tok(text)["input_ids"])
        print(f"{length:3d} tokens, buckets {mpnet_buckets(length)}: {text[:40]!r}")


# ---------------------------------------------------------------------------------------------------------
# ModernBERT, the architecture of answerdotai/ModernBERT-base: no position embeddings but rotary ones (one theta for
# global layers, another for local ones), pre-norm layers (the first with no norm before attention) and a final
# norm, a GeGLU feed-forward, every third layer global and the others attending within a sliding window, biases and
# LayerNorm biases as the config says. Masked LM (with every layer's hidden states and sentence embeddings) and a
# mean-pooling classifier.

# Added after the BPE's own ids, as answerdotai/ModernBERT-base has them (50280..50284); [MASK] eats the space before it.
MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
MODERNBERT_TEXTS = TINY_TEXTS + [MPNET_LONG.format("[MASK]")]
# local_attention: each token sees 4 on either side (ModernBERT-base: 64), so every text of more than 5 tokens
# depends on the window.
MODERNBERT_WINDOW = 8
# The classifier's seed (found by trying seeds in turn): each label is the pipeline's top one for some input.
MODERNBERT_CLS_SEED = 81


def modernbert_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A 1000-id byte-level BPE laid out as answerdotai/ModernBERT-base's: NFC, ByteLevel pre-tokenizer (no prefix
    space) and decoder, the specials after the BPE's ids, [CLS] A [SEP] and [CLS] A [SEP] B [SEP], no token_type_ids."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1000 - len(MODERNBERT_SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer.add_special_tokens([AddedToken(t, lstrip=t == "[MASK]", special=True) for t in MODERNBERT_SPECIALS])
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, model_max_length=MPNET_MAX_TOKENS, unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", pad_token="[PAD]", mask_token=AddedToken("[MASK]", lstrip=True, special=True),
        model_input_names=["input_ids", "attention_mask"])


def modernbert_config(tok, **kw) -> ModernBertConfig:
    """4 layers: global, local, local, global (global_attn_every_n_layers 3). ModernBERT-base's thetas; the inner
    size (40, Wi 80 wide) differs from Wqkv's 96 so that swapped tensors fail on their shapes."""
    return ModernBertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=MPNET_MAX_TOKENS, local_attention=MODERNBERT_WINDOW, global_attn_every_n_layers=3,
        global_rope_theta=160000.0, local_rope_theta=10000.0, norm_eps=1e-5, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, cls_token_id=tok.cls_token_id,
        sep_token_id=tok.sep_token_id, **kw)


@torch.no_grad()
def check_modernbert_options_matter(name: str, model_class, tok, texts: list[str]) -> None:
    """The sliding window and the two rotary thetas each change the outputs of every text longer than the window's
    reach (so a window left out, the thetas swapped or a layer of the wrong kind show)."""
    model = reloaded(FIXTURES / name, model_class)
    long = [t for t in texts if len(tok(t)["input_ids"]) > MODERNBERT_WINDOW // 2 + 1]
    assert long, name

    def logits() -> list[torch.Tensor]:
        return [model(**tok(t, return_tensors="pt")).logits for t in long]

    def assert_changed(before: list[torch.Tensor], what: str) -> None:
        for text, a, b in zip(long, before, logits()):
            assert (a - b).abs().max() > 1e-2, (name, what, text, (a - b).abs().max())

    before = logits()
    model.config.local_attention = 1 << 20  # the masks read it at every call
    assert_changed(before, "a window as wide as the text")
    model.config.local_attention = MODERNBERT_WINDOW
    rotary = model.base_model.rotary_emb
    full, sliding = rotary.full_attention_inv_freq.clone(), rotary.sliding_attention_inv_freq.clone()
    assert not torch.equal(full, sliding)
    rotary.full_attention_inv_freq.copy_(sliding)
    rotary.sliding_attention_inv_freq.copy_(full)
    assert_changed(before, "the thetas swapped")


@torch.no_grad()
def write_modernbert_hidden_states(name: str, tok) -> None:
    """Each sentence alone: transformers' hidden_states (the embeddings' output, every layer's but the last, and the
    last hidden state after the final norm), the last hidden state, and for the last sentence every layer's attention
    probabilities; the sentences in one right-padded batch, mean
    pooled and L2 normalised as sentence-transformers does (modules.json: Transformer, mean Pooling, Normalize).
    Added to the masked-LM fixture's files."""
    out_dir = FIXTURES / name
    encoder = reloaded(out_dir, ModernBertForMaskedLM).model
    tensors = dict(load_file(FIXTURES / f"{name}_golden.safetensors"))
    assert "token_type_ids" not in tok(MPNET_SENTENCES)
    hidden = padded_mean_embeddings(encoder, tok, tensors)
    ids = []
    for i, sentence in enumerate(MPNET_SENTENCES):
        alone = tok(sentence, return_tensors="pt")
        # What hidden_states holds, from hooks on the embeddings and the layers.
        seen = []
        hooks = [encoder.embeddings.register_forward_hook(lambda m, args, out: seen.append(out))]
        hooks += [layer.register_forward_hook(lambda m, args, out: seen.append(out)) for layer in encoder.layers]
        out = encoder(**alone, output_hidden_states=True)
        for hook in hooks:
            hook.remove()
        assert len(out.hidden_states) == len(seen) == encoder.config.num_hidden_layers + 1
        for state, want in zip(out.hidden_states[:-1], seen[:-1]):
            assert torch.equal(state, want)
        assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
        assert torch.equal(encoder.final_norm(seen[-1]), out.last_hidden_state)
        for n, state in enumerate(out.hidden_states):
            tensors[f"hidden.{i}.{n}"] = state[0].numpy()
        if i == len(MPNET_SENTENCES) - 1:
            # Every layer's attention probabilities (eager), global and local, for the attention maps.
            for n, probs in enumerate(encoder(**alone, output_attentions=True).attentions):
                tensors[f"attention.{i}.{n}"] = probs[0].numpy()
        tensors[f"hidden.{i}"] = out.last_hidden_state[0].numpy()
        ids.append(alone["input_ids"][0].tolist())
        # Padding changes nothing on the real tokens.
        torch.testing.assert_close(hidden[i, :len(ids[-1])], out.last_hidden_state[0])
    write_sentence_goldens(name, out_dir, tensors, ids, encoder.config.hidden_size)


@torch.no_grad()
def add_cls_pooling_logits(name: str, tok) -> None:
    """The same classifier's logits with classifier_pooling "cls" (the first token's vector, not the mean), for each
    input of the fixture: the test loads the fixture with that one field changed."""
    model = reloaded(FIXTURES / name, ModernBertForSequenceClassification)
    assert model.config.classifier_pooling == "mean"
    fixture = json.loads((FIXTURES / f"{name}_golden.json").read_text())
    model.config.classifier_pooling = "cls"
    for case in fixture["single"] + fixture["pairs"]:
        logits = model(**tok(case["text"], case.get("text_pair"), return_tensors="pt")).logits[0]
        assert (logits - torch.tensor(case["logits"])).abs().max() > 1e-2, (name, case["text"])
        case["logits_cls_pooling"] = logits.tolist()
    (FIXTURES / f"{name}_golden.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1))


def check_specials(tok, ids: dict[str, int], texts: list[str]) -> None:
    """A 1000-id tokenizer whose special tokens (`{"cls": 1, …}`) have the ids the real one gives them, and which
    frames each text with [CLS] … [SEP], one id per "[MASK]"."""
    assert len(tok) == 1000, len(tok)
    assert {name: getattr(tok, f"{name}_token_id") for name in ids} == ids, ids
    for text in texts:
        got = tok(text)["input_ids"]
        assert got.count(ids["mask"]) == text.count("[MASK]") and got[0] == ids["cls"] and got[-1] == ids["sep"], \
            (text, got)


def write_modernbert_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = modernbert_tokenizer(english_corpus(full))
    check_specials(tok, dict(zip(["unk", "cls", "sep", "pad", "mask"], range(995, 1000))), MODERNBERT_TEXTS)
    pair = tok("How old are you?", "I am six years old.")
    assert "token_type_ids" not in pair and pair["input_ids"].count(997) == 2, pair
    assert len(tok(MODERNBERT_TEXTS[-1])["input_ids"]) <= MPNET_MAX_TOKENS

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    save_args = {"texts": tuple(MODERNBERT_TEXTS + MPNET_SENTENCES)}
    # As ModernBERT-base: no biases but the decoder's, LayerNorms without bias; the random weights and the
    # perturbation make every LayerNorm weight matter.
    write_mlm_architecture("tiny-modernbert", perturbed(ModernBertForMaskedLM, modernbert_config(tok), 80), tok,
                           MODERNBERT_TEXTS)
    save_tokenizer(tok, FIXTURES / "tiny-modernbert", **save_args)
    check_fill_mask_gaps("tiny-modernbert", tok, MODERNBERT_TEXTS)
    check_modernbert_options_matter("tiny-modernbert", ModernBertForMaskedLM, tok, MODERNBERT_TEXTS)
    write_modernbert_hidden_states("tiny-modernbert", tok)
    # Every bias on (attention, feed-forward, LayerNorms, the head's dense layer) and the mean of the real tokens.
    write_cls_fixture("tiny-modernbert-cls", perturbed(
        ModernBertForSequenceClassification,
        modernbert_config(tok, classifier_pooling="mean", attention_bias=True, mlp_bias=True, norm_bias=True,
                          classifier_bias=True, **labels(["negative", "neutral", "positive"])),
        MODERNBERT_CLS_SEED), tok)
    save_tokenizer(tok, FIXTURES / "tiny-modernbert-cls", **save_args)
    cases = json.loads((FIXTURES / "tiny-modernbert-cls_golden.json").read_text())
    winners = [case["pipeline"][0]["label"] for case in cases["single"] + cases["pairs"]]
    assert set(winners) == {"negative", "neutral", "positive"}, winners
    check_modernbert_options_matter("tiny-modernbert-cls", ModernBertForSequenceClassification, tok, CLS_SINGLE)
    add_cls_pooling_logits("tiny-modernbert-cls", tok)
    # Token classification and QA run the `head` (dense, GELU, LayerNorm) at every token before the classifier.
    print("tiny-modernbert-ner texts showing each case:", write_ner_fixture("tiny-modernbert-ner", ner_model(
        "tiny-modernbert-ner", ModernBertForTokenClassification,
        modernbert_config(tok, classifier_bias=True, norm_bias=True, **labels(NER_LABELS))), tok))
    write_qa_fixture("tiny-modernbert-qa", perturbed(ModernBertForQuestionAnswering, modernbert_config(tok),
                                                     QA_SEEDS["tiny-modernbert-qa"]), tok)
    for text in MODERNBERT_TEXTS + MPNET_SENTENCES:
        print(f"{len(tok(text)['input_ids']):3d} tokens: {text[:40]!r}")


# ---------------------------------------------------------------------------------------------------------
# DeBERTa-v2/v3, the architecture of microsoft/deberta-v3-*: disentangled attention. Each score adds to QKᵀ a
# content-to-position term (the query against the key's relative position) and a position-to-content term (the key
# against the query's), from one table of relative position embeddings (normalised) that every layer projects with
# its own query and key weights; distances of half the buckets or more share logarithmically wider buckets. No
# absolute positions and no segments in v3. Masked LM (with sentence embeddings), a classifier on the first token's
# pooler (dense, GELU) with the other options (absolute positions, segments, c2p alone, no buckets), NER and QA.

DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # ids 0..3 as in microsoft/deberta-v3-base; [MASK] is last
DEBERTA_TEXTS = TINY_TEXTS + [MPNET_LONG.format("[MASK]")]
# position_buckets: distances of 8 and more are log-bucketed, up to max_position_embeddings (v3: 256 buckets, 512).
DEBERTA_BUCKETS = 16
DEBERTA_CLS_SEED = 112


def deberta_tokenizer(corpus: list[str]) -> DebertaV2Tokenizer:
    """A 1000-id SentencePiece-style Unigram laid out as microsoft/deberta-v3-base's: [PAD] [CLS] [SEP] [UNK], the
    trained pieces, [MASK] last; transformers' DebertaV2Tokenizer builds the rest (whitespace runs made one space,
    NFC, Metaspace "▁", [CLS] A [SEP] (type 0) B [SEP] (type 1))."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=999, special_tokens=DEBERTA_SPECIALS, unk_token="[UNK]", show_progress=False))
    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    pieces = [(p, s) for p, s in canonical_pieces(vocab[len(DEBERTA_SPECIALS):])]
    vocab = [(t, 0.0) for t in DEBERTA_SPECIALS] + pieces + [("[MASK]", 0.0)]
    return DebertaV2Tokenizer(vocab=vocab, model_max_length=MPNET_MAX_TOKENS)


def deberta_config(vocab_size: int, **kw) -> DebertaV2Config:
    """microsoft/deberta-v3-base's options, tiny: relative attention with c2p and p2c through the layers' own Q and K
    (share_att_key), log buckets, normalised relative embeddings, no absolute positions, no segments, eps 1e-7."""
    options = dict(relative_attention=True, position_buckets=DEBERTA_BUCKETS, max_relative_positions=-1,
                   norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type="p2c|c2p", position_biased_input=False,
                   type_vocab_size=0)
    return DebertaV2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, hidden_act="gelu", max_position_embeddings=MPNET_MAX_TOKENS,
                           layer_norm_eps=1e-7, pad_token_id=0, **{**options, **kw})


def deberta_positions(config: DebertaV2Config, length: int) -> list[int]:
    """The rows of the relative embeddings that a sequence of `length` tokens reads (c2p's, transformers' own)."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position
    states = torch.zeros(1, length, 1)
    span = config.position_buckets if config.position_buckets > 0 else config.max_position_embeddings
    relative = build_relative_position(states, states, bucket_size=config.position_buckets,
                                       max_position=config.max_position_embeddings)
    return sorted(set(torch.clamp(relative + span, 0, 2 * span - 1).flatten().tolist()))


@torch.no_grad()
def check_relative_attention_matters(name: str, model_class, tok, texts: list[str]) -> None:
    """The relative embeddings change the outputs (so a wrongly bucketed, indexed or missing term shows)."""
    model = reloaded(FIXTURES / name, model_class)
    logits = [model(**tok(text, return_tensors="pt")).logits for text in texts]
    model.deberta.encoder.rel_embeddings.weight.mul_(-1.5)
    for text, before in zip(texts, logits):
        after = model(**tok(text, return_tensors="pt")).logits
        assert (after - before).abs().max() > 1e-2, (name, text, (after - before).abs().max())


def write_deberta_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = deberta_tokenizer(english_corpus(full))
    check_specials(tok, {"pad": 0, "cls": 1, "sep": 2, "unk": 3, "mask": 999}, DEBERTA_TEXTS)
    pair = tok("How old are you?", "I am six years old.")
    assert pair["token_type_ids"][-1] == 1 and pair["input_ids"].count(2) == 2, pair

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    config = deberta_config(len(tok))
    long = len(tok(DEBERTA_TEXTS[-1])["input_ids"])
    assert long <= MPNET_MAX_TOKENS and len(deberta_positions(config, long)) == 2 * DEBERTA_BUCKETS - 1, long
    save_args = {"texts": tuple(DEBERTA_TEXTS + MPNET_SENTENCES + NER_TEXTS)}
    write_mlm_architecture("tiny-deberta-v2", perturbed(DebertaV2ForMaskedLM, config, 90), tok, DEBERTA_TEXTS)
    save_tokenizer(tok, FIXTURES / "tiny-deberta-v2", **save_args)
    check_fill_mask_gaps("tiny-deberta-v2", tok, DEBERTA_TEXTS)
    check_relative_attention_matters("tiny-deberta-v2", DebertaV2ForMaskedLM, tok, DEBERTA_TEXTS)
    write_mlm_embeddings("tiny-deberta-v2", DebertaV2ForMaskedLM, tok)
    # The options v3 leaves out: absolute positions and segments in the input, c2p alone (scale √(2d)), distances
    # unbucketed up to max_relative_positions, the relative embeddings not normalised.
    cls_config = deberta_config(len(tok), position_biased_input=True, type_vocab_size=2, pos_att_type=["c2p"],
                                position_buckets=-1, max_relative_positions=24, norm_rel_ebd="none",
                                **labels(["negative", "neutral", "positive"]))
    write_cls_fixture("tiny-deberta-v2-cls", perturbed(DebertaV2ForSequenceClassification, cls_config,
                                                       DEBERTA_CLS_SEED), tok)
    save_tokenizer(tok, FIXTURES / "tiny-deberta-v2-cls", **save_args)
    cases = json.loads((FIXTURES / "tiny-deberta-v2-cls_golden.json").read_text())
    winners = [case["pipeline"][0]["label"] for case in cases["single"] + cases["pairs"]]
    assert set(winners) == {"negative", "neutral", "positive"}, winners
    check_segments_matter("tiny-deberta-v2-cls", DebertaV2ForSequenceClassification, tok)
    check_relative_attention_matters("tiny-deberta-v2-cls", DebertaV2ForSequenceClassification, tok, CLS_SINGLE)
    print("tiny-deberta-v2-ner texts showing each case:", write_ner_fixture("tiny-deberta-v2-ner", ner_model(
        "tiny-deberta-v2-ner", DebertaV2ForTokenClassification, deberta_config(len(tok), **labels(NER_LABELS))), tok))
    write_qa_fixture("tiny-deberta-v2-qa", perturbed(DebertaV2ForQuestionAnswering, deberta_config(len(tok)),
                                                     QA_SEEDS["tiny-deberta-v2-qa"]), tok)
    for text in DEBERTA_TEXTS + MPNET_SENTENCES:
        print(f"{len(tok(text)['input_ids']):3d} tokens: {text[:40]!r}")


# ---------------------------------------------------------------------------------------------------------
# The rest of the architecture × head matrix: token classification and span heads for the families whose parts
# above write none (and XLM-R's classifier), each on the family's tiny config and tokenizer. The heads are the same
# modules in every family; these fixtures prove each family's tensor names, tokenizer offsets and inputs reach them.

# Seeds (and "O" shifts) found by trying seeds in turn, as NER_HEADS and QA_SEEDS above.
MATRIX_NER = {"tiny-xlm-roberta-ner": (101, 1.5), "tiny-distilbert-ner": (111, 0.0), "tiny-albert-ner": (124, 2.0),
              "tiny-electra-ner": (130, 0.0), "tiny-mpnet-ner": (140, 0.5)}
MATRIX_QA = {"tiny-bert-qa": 150, "tiny-xlm-roberta-qa": 160, "tiny-albert-qa": 170, "tiny-electra-qa": 180,
             "tiny-mpnet-qa": 190}


def write_matrix_fixtures(model_dir: Path) -> None:
    full = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    wordpiece, distil = wordpiece_tokenizers(full)
    corpus = english_corpus(full)
    unigram, albert, mpnet = unigram_tokenizer(corpus), albert_tokenizer(corpus), mpnet_tokenizer(full)

    def labels(names: list[str]) -> dict:
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    ner_labels = labels(NER_LABELS)
    NER_HEADS.update(MATRIX_NER)
    for name, model_class, config, tok in [
        ("tiny-xlm-roberta-ner", XLMRobertaForTokenClassification,
         roberta_config(XLMRobertaConfig, len(unigram), **ner_labels), unigram),
        ("tiny-distilbert-ner", DistilBertForTokenClassification, distilbert_config(**ner_labels), distil),
        ("tiny-albert-ner", AlbertForTokenClassification, albert_config(**ner_labels), albert),
        ("tiny-electra-ner", ElectraForTokenClassification, electra_config(**ner_labels), wordpiece),
        ("tiny-mpnet-ner", MPNetForTokenClassification, mpnet_config(len(mpnet), **ner_labels), mpnet),
    ]:
        print(name, "texts showing each case:", write_ner_fixture(name, ner_model(name, model_class, config),
                                                                  copy.deepcopy(tok)))
    for name, model_class, config, tok in [
        ("tiny-bert-qa", BertForQuestionAnswering, bert_config(), wordpiece),
        ("tiny-xlm-roberta-qa", XLMRobertaForQuestionAnswering, roberta_config(XLMRobertaConfig, len(unigram)),
         unigram),
        ("tiny-albert-qa", AlbertForQuestionAnswering, albert_config(), albert),
        ("tiny-electra-qa", ElectraForQuestionAnswering, electra_config(), wordpiece),
        ("tiny-mpnet-qa", MPNetForQuestionAnswering, mpnet_config(len(mpnet)), mpnet),
    ]:
        # A copy each: the QA pipeline leaves its truncation on the tokenizer, which save_pretrained would write.
        write_qa_fixture(name, perturbed(model_class, config, MATRIX_QA[name]), copy.deepcopy(tok))
    write_cls_fixture("tiny-xlm-roberta-cls", perturbed(
        XLMRobertaForSequenceClassification,
        roberta_config(XLMRobertaConfig, len(unigram), **labels(["negative", "neutral", "positive"])), 200),
        copy.deepcopy(unigram))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True, help="all-MiniLM-L6-v2 in Hugging Face layout")
    ap.add_argument("--mlm", type=Path, help="the assembled fill-mask model (www/models/minilm-l6-mlm)")
    ap.add_argument("--part", choices=["all", "bert", "architectures", "heads", "albert-electra", "mpnet", "modernbert",
                             "deberta", "matrix"],
                    default="all",
                    help="bert: MiniLM and the tiny BERT models; architectures: RoBERTa, XLM-R, DistilBERT, "
                         "classifiers; heads: token classification (NER) and extractive question answering; "
                         "albert-electra: ALBERT and ELECTRA (generator) masked LMs and classifiers; mpnet: MPNet "
                         "(relative position bias) masked LM with sentence embeddings, and classifier; modernbert: ModernBERT "
                         "(rotary, GeGLU, pre-norm, sliding windows) masked LM with hidden states and sentence "
                         "embeddings, and mean-pooling classifier; deberta: DeBERTa-v2/v3 (disentangled "
                         "attention) masked LM with sentence embeddings, classifier, NER and QA; matrix: NER and QA for the "
                         "families above that lack them, and XLM-R's classifier")
    args = ap.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "bert"):
        write_bert_fixtures(args.model, args.mlm)
    if args.part in ("all", "architectures"):
        write_architecture_fixtures(args.model)
    if args.part in ("all", "heads"):
        write_head_fixtures(args.model)
    if args.part in ("all", "albert-electra"):
        write_albert_electra_fixtures(args.model)
    if args.part in ("all", "mpnet"):
        write_mpnet_fixtures(args.model)
    if args.part in ("all", "modernbert"):
        write_modernbert_fixtures(args.model)
    if args.part in ("all", "deberta"):
        write_deberta_fixtures(args.model)
    if args.part in ("all", "matrix"):
        write_matrix_fixtures(args.model)


if __name__ == "__main__":
    main()
