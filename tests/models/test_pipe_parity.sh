#!/bin/bash
# Parity of nlpd's fastText stages with the fastText tool, through the real CLI (`nlpd pipe`):
#   langid:    lang.code/lang.score vs `fasttext predict-prob lid.176.ftz - 1` on build/corpus/multilingual.*
#   sentiment: sentiment.label/score vs `fasttext predict-prob amazon_review_{polarity,full}.ftz - 1` on the
#              reviews, normalised here by an independent implementation of fastText's classification scripts
#   accuracy:  sentiment on reviews.tsv's gold labels, with and without normalisation
# Same labels on every line and |Δscore| <= 1e-5, with exact_scores = true (the tool's printed value); by default
# the scores are probabilities: the tool's value less its 1e-5, within [0, 1] (langid_probability,
# sentiment_polarity_probability). Usage: test_pipe_parity.sh [NLPD_BINARY] (default build/nlpd).
# Prints `ok - ...`/`not ok - ...` per check and `N passed, N failed`; skips (0 passed, 0 failed) only when the
# fasttext tool or the models are absent.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=2000
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
FT=${FASTTEXT:-fasttext}
LID=$ROOT/models/lid.176.ftz
POL=$ROOT/models/amazon_review_polarity.ftz
FULL=$ROOT/models/amazon_review_full.ftz
C=$ROOT/build/corpus
TOL=1e-5


if ! command -v "$FT" > /dev/null 2>&1; then
    echo "skip: the fasttext tool is not installed (apt-get install fasttext)"
    finish
fi
if [ ! -f "$LID" ] && [ ! -f "$POL" ]; then
    echo "skip: models/lid.176.ftz and models/amazon_review_polarity.ftz are absent (make models)"
    finish
fi
if [ ! -x "$NLPD" ]; then
    nok "binary" "$NLPD not found (make)"
    finish
fi

T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

# compare.py MODE REF NLPD_OUT TOL [prob]: MODE langid | polarity | full. Prints "N lines, max |Δ| = x" or the
# first mismatches; exit 1 on any mismatch. With "prob" nlpd's scores are compared with the tool's less 1e-5 (the
# probability fastText's log(p + 1e-5) hides) and must lie within [0, 1]; at least one tool value must exceed 1, so
# that the range check can fail.
cat > "$T/compare.py" <<'PY'
import json, sys
mode, ref_path, out_path = sys.argv[1:4]
tol = float(sys.argv[4])
prob = len(sys.argv) > 5 and sys.argv[5] == "prob"
over1 = 0
ref = open(ref_path, encoding="utf-8").read().split("\n")
out = open(out_path, encoding="utf-8").read().split("\n")
for l in (ref, out):
    if l and l[-1] == "":
        l.pop()
probs = []
if len(ref) != len(out):
    probs.append("%d fasttext lines vs %d nlpd lines" % (len(ref), len(out)))
maxd, n = 0.0, 0
for i, (r, o) in enumerate(zip(ref, out), 1):
    parts = r.split()
    if len(parts) != 2 or not parts[0].startswith("__label__"):
        probs.append("line %d: fasttext printed %r" % (i, r)); continue
    label, p = parts[0], float(parts[1])
    rec = json.loads(o)
    if "error" in rec:
        probs.append("line %d: nlpd error %r" % (i, rec["error"])); continue
    if mode == "langid":
        got = rec.get("lang") or {}
        want = label[len("__label__"):]
        glabel = got.get("code")
    else:
        got = rec.get("sentiment") or {}
        want = {"__label__1": "negative", "__label__2": "positive"}.get(label) if mode == "polarity" else label[len("__label__"):]
        glabel = got.get("label")
    if glabel != want:
        probs.append("line %d (id %s): label %r, fasttext %s" % (i, rec.get("id"), glabel, label)); continue
    score = float(got.get("score", float("nan")))
    if prob:
        over1 += p > 1.0
        if not 0.0 <= score <= 1.0:
            probs.append("line %d (id %s): score %r outside [0, 1]" % (i, rec.get("id"), score)); continue
        p = min(max(p - 1e-5, 0.0), 1.0)
    d = abs(score - p)
    if not d <= tol:
        probs.append("line %d (id %s): score %r, fasttext %s (|Δ| %.3g)" % (i, rec.get("id"), got.get("score"), parts[1], d))
        continue
    maxd = max(maxd, d)
    n += 1
if prob and not over1:
    probs.append("no fasttext value above 1: the [0, 1] check proves nothing on this input")
if probs:
    print("%d mismatches: %s" % (len(probs), "; ".join(probs[:8])))
    sys.exit(1)
print("%d lines, max |Δ| = %.2g%s" % (n, maxd, ", %d tool values above 1" % over1 if prob else ""))
PY

# parity NAME MODE CONF IN_JSONL FT_MODEL FT_INPUT_TXT [MIN_LINES [prob]]
parity() {
    local name=$1 mode=$2 cfg=$3 in=$4 model=$5 txt=$6 min=${7:-1} kind=${8:-exact} why n
    if ! timeout 300 "$NLPD" pipe -c "$cfg" < "$in" > "$T/$name.out" 2> "$T/$name.err"; then
        nok "$name" "nlpd pipe failed: $(tail -n 5 "$T/$name.err")"
        return
    fi
    if ! timeout 300 "$FT" predict-prob "$model" - 1 < "$txt" > "$T/$name.ref" 2> "$T/$name.referr"; then
        nok "$name" "fasttext predict-prob failed: $(tail -n 5 "$T/$name.referr")"
        return
    fi
    n=$(wc -l < "$T/$name.ref")
    if [ "$n" -lt "$min" ]; then
        nok "$name" "only $n lines compared (need $min)"
        return
    fi
    if why=$(python3 "$T/compare.py" "$mode" "$T/$name.ref" "$T/$name.out" "$TOL" "$kind" 2>&1); then
        ok "$name: $why"
    else
        nok "$name" "$why"
    fi
}

# --- langid ------------------------------------------------------------------------------------------------------
if [ ! -f "$LID" ]; then
    echo "skip: langid parity: models/lid.176.ftz absent"
elif [ ! -f "$C/multilingual.jsonl" ] || [ ! -f "$C/multilingual.txt" ]; then
    nok "langid_corpus" "$C/multilingual.{txt,jsonl} missing (sh scripts/make-corpora.sh)"
else
    for threads in 1 2; do
        cat > "$T/lid$threads.conf" <<EOF
batch:   { max_records = 64; };
kernels: { threads = $threads; };
pipeline = ( { stage = "langid"; model = "$LID"; exact_scores = true; } );
EOF
        parity "langid_parity_threads$threads" langid "$T/lid$threads.conf" "$C/multilingual.jsonl" "$LID" \
            "$C/multilingual.txt" 1000
    done
    cat > "$T/lidprob.conf" <<EOF
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
    parity langid_probability langid "$T/lidprob.conf" "$C/multilingual.jsonl" "$LID" "$C/multilingual.txt" 1000 prob
fi

# --- sentiment ---------------------------------------------------------------------------------------------------
if [ ! -f "$POL" ]; then
    echo "skip: sentiment parity: models/amazon_review_polarity.ftz absent"
elif [ ! -f "$C/reviews.jsonl" ] || [ ! -f "$C/reviews.tsv" ]; then
    # scripts/make-corpora.sh documents that the reviews (from the npm registry) may be unavailable offline.
    echo "skip: sentiment parity and accuracy: $C/reviews.{tsv,jsonl} not built (sh scripts/make-corpora.sh needs the npm registry)"
else
    # An independent implementation of the preprocessing in fastText's classification scripts
    # (classification-example.sh, normalize_text): lowercase; ' . , ( ) ! ? spaced; " removed; ; : -> space;
    # <br /> -> space; runs of spaces squeezed.
    python3 - "$C/reviews.jsonl" "$T" <<'PY'
import json, re, sys
src, t = sys.argv[1], sys.argv[2]
def normalize(s):
    s = s.lower()
    s = s.replace("'", " ' ").replace('"', "").replace(".", " . ").replace("<br />", " ")
    for c in ",()!?":
        s = s.replace(c, " %s " % c)
    s = s.replace(";", " ").replace(":", " ")
    return re.sub(" +", " ", s)
recs = [json.loads(l) for l in open(src, encoding="utf-8")]
with open(t + "/reviews.norm.txt", "w", encoding="utf-8") as f:
    for r in recs:
        f.write(normalize(r["text"]) + "\n")
with open(t + "/reviews.raw.txt", "w", encoding="utf-8") as f:
    for r in recs:
        f.write(r["text"] + "\n")
PY
    for threads in 1 2; do
        cat > "$T/pol$threads.conf" <<EOF
kernels: { threads = $threads; };
pipeline = ( { stage = "sentiment"; model = "$POL"; exact_scores = true; } );
EOF
    done
    cat > "$T/polraw.conf" <<EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; lowercase = false; split_punctuation = false;
               exact_scores = true; } );
EOF
    cat > "$T/polprob.conf" <<EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; } );
EOF
    parity sentiment_polarity_probability polarity "$T/polprob.conf" "$C/reviews.jsonl" "$POL" "$T/reviews.norm.txt" \
        1000 prob
    parity sentiment_polarity_parity polarity "$T/pol1.conf" "$C/reviews.jsonl" "$POL" "$T/reviews.norm.txt" 1000
    parity sentiment_polarity_parity_threads2 polarity "$T/pol2.conf" "$C/reviews.jsonl" "$POL" "$T/reviews.norm.txt" 1000
    parity sentiment_polarity_parity_no_normalisation polarity "$T/polraw.conf" "$C/reviews.jsonl" "$POL" \
        "$T/reviews.raw.txt" 1000
    if [ -f "$FULL" ]; then
        cat > "$T/full.conf" <<EOF
pipeline = ( { stage = "sentiment"; model = "$FULL"; exact_scores = true; } );
EOF
        parity sentiment_full_parity full "$T/full.conf" "$C/reviews.jsonl" "$FULL" "$T/reviews.norm.txt" 1000
    else
        echo "skip: 5-class parity: models/amazon_review_full.ftz absent"
    fi

    # Accuracy on the gold labels (informational numbers; thresholds asserted).
    if [ -s "$T/sentiment_polarity_parity_threads2.out" ] && [ -s "$T/sentiment_polarity_parity_no_normalisation.out" ]; then
        if why=$(python3 - "$C/reviews.tsv" "$T/sentiment_polarity_parity_threads2.out" \
            "$T/sentiment_polarity_parity_no_normalisation.out" 2>&1 <<'PY'
import json, sys
gold = [l.split("\t", 1)[0] for l in open(sys.argv[1], encoding="utf-8").read().splitlines()]
def acc(path):
    recs = [json.loads(l) for l in open(path, encoding="utf-8")]
    if len(recs) != len(gold):
        sys.exit("%s: %d records for %d gold labels" % (path, len(recs), len(gold)))
    return sum(1 for r, g in zip(recs, gold) if (r.get("sentiment") or {}).get("label") == g) / len(gold)
a, b = acc(sys.argv[2]), acc(sys.argv[3])
msg = "accuracy %.3f with normalisation, %.3f without (%d reviews)" % (a, b, len(gold))
print(msg, file=sys.stderr)
if a < 0.88:
    sys.exit("%s: below 0.88" % msg)
if a - b <= 0.05:
    sys.exit("%s: normalisation gains only %.1f points (need > 5)" % (msg, 100 * (a - b)))
PY
        ); then
            ok "sentiment_accuracy: $why"
        else
            nok "sentiment_accuracy" "$why"
        fi
    else
        nok "sentiment_accuracy" "no nlpd output to score"
    fi
fi

finish
