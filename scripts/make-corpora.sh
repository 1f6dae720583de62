#!/bin/sh
# Builds the test and benchmark corpora under build/corpus/ from real text that Debian and npm packages ship:
#   multilingual.txt/.lang/.jsonl  sentences from glib's translation catalogues (libglib2.0-data), ~90 locales
#   bench100k.txt/.jsonl           100,000 lines cycling multilingual.txt (the langid benchmark's input)
#   reviews.tsv/.jsonl             1000 labelled Amazon review sentences (UCI "Sentiment Labelled Sentences",
#                                  Kotzias et al. 2015), from the npm package wink-sentiment@5.0.2
# Deterministic and idempotent: a file already built is kept. Exit 1 when something cannot be built (the reviews
# need the npm registry; the multilingual files are still built without it).
set -eu

cd "$(dirname "$0")/.."
OUT=build/corpus
mkdir -p "$OUT"

rc=0

# --- multilingual + bench: pure python3 over the .mo files -------------------------------------------------------
if [ ! -f "$OUT/multilingual.txt" ] || [ ! -f "$OUT/multilingual.lang" ] || [ ! -f "$OUT/multilingual.jsonl" ] ||
	[ ! -f "$OUT/bench100k.txt" ] || [ ! -f "$OUT/bench100k.jsonl" ]; then
	python3 - "$OUT" <<'PY' || rc=1
import glob, hashlib, json, os, re, struct, sys

out = sys.argv[1]
DOMAIN = "glib20"          # libglib2.0-data: ~100 locales, installed by scripts/setup-deps.sh
PER_LOCALE = 60            # cap per locale, so that big catalogues do not swamp small ones
MIN_WORDS = 4              # counted in the English msgid (works for scripts without spaces too)
MIN_CHARS = 12
BENCH_LINES = 100000
# en@shaw is English transliterated into the Shavian alphabet: no language-ID label fits it.
SKIP_LOCALES = {"en@shaw"}

def read_mo(path):
    """(msgid, msgstr) pairs of a GNU .mo file; plural and context entries are left out."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic == 0x950412DE else ">"
    _rev, n, off_orig, off_trans = struct.unpack(e + "4I", data[4:20])
    charset = "utf-8"
    pairs = []
    for i in range(n):
        ln, o = struct.unpack(e + "2I", data[off_orig + 8 * i: off_orig + 8 * i + 8])
        k = data[o:o + ln]
        ln, o = struct.unpack(e + "2I", data[off_trans + 8 * i: off_trans + 8 * i + 8])
        v = data[o:o + ln]
        if not k:
            m = re.search(rb"charset=([-\w]+)", v)
            if m:
                charset = m.group(1).decode("ascii")
            continue
        pairs.append((k, v))
    res = []
    for k, v in pairs:
        if b"\0" in k or b"\x04" in k:
            continue
        res.append((k.decode("utf-8"), v.decode(charset)))
    return res

def usable(msgid, text):
    # No format specifiers, markup, multi-line help texts or tabs: whole, plain sentences only.
    for s in (msgid, text):
        if "%" in s or "<" in s or "\n" in s or "\r" in s or "\t" in s:
            return False
    return len(msgid.split()) >= MIN_WORDS and len(text) >= MIN_CHARS

def key(msgid):
    # A fixed pseudo-random order of msgids, the same for every locale: the corpus is largely parallel.
    return hashlib.sha1(msgid.encode("utf-8")).hexdigest()

paths = sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/%s.mo" % DOMAIN))
if not paths:
    sys.exit("make-corpora: no /usr/share/locale/*/LC_MESSAGES/%s.mo: install libglib2.0-data "
             "(scripts/setup-deps.sh), and check that no dpkg path-exclude drops /usr/share/locale" % DOMAIN)

catalogues = {}
for p in paths:
    loc = p.split("/")[-3]
    if loc not in SKIP_LOCALES:
        catalogues[loc] = read_mo(p)
# The English source strings count as one more locale.
english = {}
for pairs in catalogues.values():
    for k, _ in pairs:
        english[k] = k
catalogues["en"] = sorted(english.items())

seen = set()
rows = []   # (locale, text)
for loc in sorted(catalogues):
    cands = []
    for msgid, msgstr in catalogues[loc]:
        text = " ".join(msgstr.split())
        if loc != "en" and msgstr == msgid:
            continue    # untranslated
        if usable(msgid, text):
            cands.append((key(msgid), text))
    cands.sort()
    n = 0
    for _, text in cands:
        if n == PER_LOCALE:
            break
        if text in seen:
            continue
        seen.add(text)
        rows.append((loc, text))
        n += 1

# Interleave the locales in a fixed order, as a mixed stream would be.
rows.sort(key=lambda r: hashlib.sha1((r[0] + "\t" + r[1]).encode("utf-8")).hexdigest())
locales = {loc for loc, _ in rows}
langs = {re.split(r"[_@]", loc)[0] for loc in locales}
if len(rows) < 3000 or len(langs) < 40:
    sys.exit("make-corpora: only %d sentences in %d languages from %s.mo (need 3000 and 40)"
             % (len(rows), len(langs), DOMAIN))

def write(name, lines):
    tmp = os.path.join(out, "." + name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, os.path.join(out, name))

def jline(i, text):
    return json.dumps({"id": str(i), "text": text}, ensure_ascii=False)

texts = [t for _, t in rows]
bench = [texts[i % len(texts)] for i in range(BENCH_LINES)]
write("bench100k.txt", bench)
write("bench100k.jsonl", (jline(i + 1, t) for i, t in enumerate(bench)))
write("multilingual.lang", (loc for loc, _ in rows))
write("multilingual.jsonl", (jline(i + 1, t) for i, t in enumerate(texts)))
write("multilingual.txt", texts)    # last: its presence means the set is complete
print("make-corpora: %s/multilingual.txt: %d sentences, %d locales, %d languages; bench100k: %d lines"
      % (out, len(rows), len(locales), len(langs), BENCH_LINES))
PY
fi

# --- reviews: labelled sentences from an npm package, pinned by sha256 ----------------------------------------
REVIEWS_PKG=wink-sentiment@5.0.2
REVIEWS_TGZ_SHA=412418c576200247fda64a5c26e06f1ed209c4343139e65910d068fb89791ba6
REVIEWS_PATH=package/test/data/amazon_cells_labelled.txt
REVIEWS_SHA=47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3

if [ ! -f "$OUT/reviews.tsv" ] || [ ! -f "$OUT/reviews.jsonl" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	fail() {
		echo "make-corpora: error: $*" >&2
		echo "make-corpora: $OUT/reviews.tsv not built (tests that need it skip)" >&2
		rc=1
	}
	if ! command -v npm >/dev/null 2>&1; then
		fail "npm not found (scripts/setup-deps.sh installs it)"
	elif ! (cd "$tmp" && npm_config_update_notifier=false timeout 300 \
		npm pack --loglevel=error --fetch-retries=1 "$REVIEWS_PKG") >"$tmp/npm.log" 2>&1; then
		fail "npm pack $REVIEWS_PKG failed (is the npm registry reachable?): $(grep "npm error" "$tmp/npm.log" | head -n 2 | tr "\n" " ")"
	else
		tgz="$tmp/wink-sentiment-5.0.2.tgz"
		got=$(sha256sum "$tgz" | cut -d' ' -f1)
		if [ "$got" != "$REVIEWS_TGZ_SHA" ]; then
			fail "$REVIEWS_PKG tarball: sha256 mismatch: expected $REVIEWS_TGZ_SHA, got $got"
		elif ! tar -xzf "$tgz" -C "$tmp" "$REVIEWS_PATH"; then
			fail "$REVIEWS_PATH not in the $REVIEWS_PKG tarball"
		elif got=$(sha256sum "$tmp/$REVIEWS_PATH" | cut -d' ' -f1) && [ "$got" != "$REVIEWS_SHA" ]; then
			fail "$REVIEWS_PATH: sha256 mismatch: expected $REVIEWS_SHA, got $got"
		else
			python3 - "$tmp/$REVIEWS_PATH" "$OUT" <<'PY' || rc=1
import json, os, sys
src, out = sys.argv[1], sys.argv[2]
rows = []
with open(src, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or label not in ("0", "1"):
            sys.exit("make-corpora: %s:%d: expected text<TAB>0|1" % (src, n))
        rows.append(("positive" if label == "1" else "negative", " ".join(text.split())))
for name, lines in (
    ("reviews.jsonl", (json.dumps({"id": str(i), "text": t, "label": l}, ensure_ascii=False)
                       for i, (l, t) in enumerate(rows, 1))),
    ("reviews.tsv", ("%s\t%s" % r for r in rows)),    # last: its presence means the set is complete
):
    tmp = os.path.join(out, "." + name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, os.path.join(out, name))
pos = sum(1 for l, _ in rows if l == "positive")
print("make-corpora: %s/reviews.tsv: %d sentences (%d positive, %d negative)" % (out, len(rows), pos, len(rows) - pos))
PY
		fi
	fi
fi

exit $rc
