#!/usr/bin/env python3
"""Builds the masked-LM training corpus from English text that Debian packages carry, one passage per line.

Sources (installed by scripts/corpus.sh):
  * wordnet-base: each synset as "lemma: definition. Example. Example." (WordNet 3.0 licence, Princeton).
  * fortunes: the quotations and sayings, whitespace-collapsed; ASCII art and code-like entries dropped
    (BSD licence, University of California; the files' texts are their authors').
Deliberately not used (kept for independent evaluation): AppStream metadata, /usr/share/common-licenses,
dictionary quotations.

2% of the passages, chosen by a hash of their text (so stable across runs), go to heldout.txt.
Usage: scripts/corpus.py OUT_DIR
"""
import hashlib
import pathlib
import re
import sys

WORDNET = pathlib.Path("/usr/share/wordnet")
FORTUNES = pathlib.Path("/usr/share/games/fortunes")
SKIP_FORTUNES = {"art", "ascii-art", "translate-me", "perl"}


def sentence(text):
    text = text.strip().strip(";").strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def wordnet():
    for part in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # the licence header
            fields, gloss = line.split("|", 1)
            lemma = fields.split()[4].replace("_", " ")
            lemma = re.sub(r"\([a-z]+\)$", "", lemma)  # adjective markers such as "(p)"
            examples = re.findall(r'"([^"]+)"', gloss)
            definition = re.sub(r'"[^"]*"', "", gloss).strip().strip(";").strip()
            text = " ".join(s for s in [f"{lemma}: {sentence(definition)}"] + [sentence(e) for e in examples] if s)
            yield text


def fortunes():
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name in SKIP_FORTUNES:
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.split())
            if not 20 <= len(text) <= 1000:
                continue
            letters = sum(c.isalpha() or c.isspace() for c in text)
            if letters / len(text) < 0.85:
                continue  # ASCII art, code, tables
            yield text


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    seen = set()
    train, heldout = [], []
    for text in list(wordnet()) + list(fortunes()):
        if text in seen:
            continue
        seen.add(text)
        digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        (heldout if digest % 50 == 0 else train).append(text)
    (out / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out / "heldout.txt").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    words = sum(len(t.split()) for t in train)
    print(f"{out}: {len(train)} training passages ({words} words), {len(heldout)} held out")


if __name__ == "__main__":
    main()
