#!/bin/sh
# Trains tiny fastText models (softmax, hs, ova, ns; word and char n-grams; quantised with -qnorm, -qout,
# -cutoff/-retrain, odd -dsub) and checks nlpd's runtime against `fasttext predict-prob` on each, then on
# the real models when present. Usage: test_fasttext_models.sh [LINES_FILE]. Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
root=$(pwd)
parity=$root/tests/models/fasttext_parity.sh
if ! command -v fasttext > /dev/null 2>&1; then
    echo "fasttext tool not installed (apt-get install fasttext)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
if [ ! -x build/tests/tool_ftpredict ]; then
    make -s build/tests/tool_ftpredict || exit 2
fi
T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT INT TERM

# --- corpora: deterministic, with UTF-8 words and multi-label lines ------------------------------------------------
python3 - "$T" <<'PY'
import random, sys
t = sys.argv[1]
rnd = random.Random(42)
syl = ["ka", "lo", "mi", "zu", "te", "ra", "no", "vi", "sé", "ñu", "öl", "ж", "щи", "λα", "日本", "語", "ا", "ب", "🙂"]
def word():
    return "".join(rnd.choice(syl) for _ in range(rnd.randint(1, 4)))
common = [word() for _ in range(400)]
def corpus(path, nlabels, nlines, multi):
    vocab = [[word() for _ in range(60)] for _ in range(nlabels)]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(nlines):
            labs = [rnd.randrange(nlabels)]
            if multi and rnd.random() < 0.3:
                labs.append(rnd.randrange(nlabels))
            words = []
            for _ in range(rnd.randint(3, 15)):
                src = vocab[rnd.choice(labs)] if rnd.random() < 0.6 else common
                words.append(rnd.choice(src))
            f.write(" ".join("__label__L%d" % l for l in labs) + " " + " ".join(words) + "\n")
corpus(t + "/train5.txt", 5, 3000, True)
corpus(t + "/train300.txt", 300, 6000, False)

# test lines: corpus lines without labels, then tricky content
lines = []
for l in open(t + "/train5.txt", encoding="utf-8").read().splitlines()[:300]:
    lines.append(" ".join(w for w in l.split() if not w.startswith("__label__")))
lines.append(open(t + "/train300.txt", encoding="utf-8").readline().split(" ", 1)[1].rstrip("\n"))
tricky = [
    "", "   ", "\t\t", "\tleading tab\tand\ttabs\t", "carriage\rreturn", "vertical\vtab form\ffeed",
    "ctrl\x01chars\x02 and \x7f del", "__label__L1 " + common[0] + " __label__L2 " + common[1],
    "__label__L3", "__label__unknown word", "__label__", "x__label__L1", "</s>", "a </s> b c", "a </s>", "</s> </s>",
    "nul\x00inside " + common[2], "日本語のテキスト 🙂🙂 " + common[3], "\xc3", "é" * 50,
    " ".join(rnd.choice(common) for _ in range(20000)), "a" * 5000,
]
with open(t + "/lines.txt", "wb") as f:
    for l in lines + tricky:
        f.write(l.encode("utf-8", "surrogateescape") + b"\n")
    f.write(b"last line without newline " + common[4].encode())
PY
[ $? -eq 0 ] || { echo "corpus generation failed"; echo "0 passed, 1 failed"; exit 1; }

if [ $# -ge 1 ]; then
    lines_real=$1
elif [ -f build/corpus/multilingual.txt ]; then
    cat build/corpus/multilingual.txt "$T/lines.txt" > "$T/lines_real.txt"
    lines_real=$T/lines_real.txt
else
    lines_real=$T/lines.txt
fi

check() { # MODEL LINES K...
    m=$1 l=$2
    shift 2
    for k in "$@"; do
        out=$("$parity" "$m" "$l" "$k" 2>&1)
        rc=$?
        summary=$(printf '%s\n' "$out" | tail -n 2 | head -n 1)
        if [ $rc -eq 0 ]; then
            pass=$((pass + 1))
            echo "ok   $summary"
        else
            fail=$((fail + 1))
            printf '%s\n' "$out" | head -n 40
            echo "FAIL $(basename "$m") k=$k"
        fi
    done
}

train() { # NAME TRAINFILE ARGS...
    name=$1 tf=$2
    shift 2
    if ! fasttext supervised -input "$tf" -output "$T/$name" -thread 1 -dim 16 -epoch 5 -minCount 1 \
        -bucket 20000 -verbose 0 "$@" > "$T/$name.log" 2>&1; then
        fail=$((fail + 1))
        echo "FAIL training $name:"
        tail -n 5 "$T/$name.log"
        return 1
    fi
}

quant() { # BASE NAME TRAINFILE ARGS...: quantises a copy of BASE.bin into NAME.ftz
    base=$1 name=$2 tf=$3
    shift 3
    cp "$T/$base.bin" "$T/$name.bin"
    if ! fasttext quantize -input "$tf" -output "$T/$name" -thread 1 -verbose 0 "$@" > "$T/$name.log" 2>&1; then
        fail=$((fail + 1))
        echo "FAIL quantising $name:"
        tail -n 5 "$T/$name.log"
        return 1
    fi
}

L=$T/lines.txt
train sm "$T/train5.txt" -loss softmax -wordNgrams 2 && check "$T/sm.bin" "$L" 1 3 5
train sm_sub "$T/train5.txt" -loss softmax -wordNgrams 2 -minn 2 -maxn 4 && check "$T/sm_sub.bin" "$L" 1 3 5
train hs "$T/train5.txt" -loss hs -wordNgrams 2 && check "$T/hs.bin" "$L" 1 3 5
train hs_sub "$T/train5.txt" -loss hs -wordNgrams 2 -minn 2 -maxn 4 && check "$T/hs_sub.bin" "$L" 1 3 5
train ova "$T/train5.txt" -loss ova -wordNgrams 2 && check "$T/ova.bin" "$L" 1 3 5
train ova_sub "$T/train5.txt" -loss ova -wordNgrams 2 -minn 2 -maxn 4 && check "$T/ova_sub.bin" "$L" 1 3 5
train ns_sub "$T/train5.txt" -loss ns -wordNgrams 3 -minn 1 -maxn 3 && check "$T/ns_sub.bin" "$L" 1 5
train plain "$T/train5.txt" -loss softmax -bucket 0 && check "$T/plain.bin" "$L" 1 5
train sm300 "$T/train300.txt" -loss softmax -wordNgrams 2 -minn 2 -maxn 4 && check "$T/sm300.bin" "$L" 1 3 300
train hs300 "$T/train300.txt" -loss hs -wordNgrams 2 && check "$T/hs300.bin" "$L" 1 3 300

quant sm_sub sm_sub_q "$T/train5.txt" -qnorm && check "$T/sm_sub_q.ftz" "$L" 1 3 5
quant hs_sub hs_sub_q "$T/train5.txt" -dsub 3 && check "$T/hs_sub_q.ftz" "$L" 1 3 5
quant ova_sub ova_sub_q "$T/train5.txt" -qnorm -dsub 5 && check "$T/ova_sub_q.ftz" "$L" 1 3 5
quant sm sm_cut "$T/train5.txt" -qnorm -cutoff 500 -retrain -epoch 1 && check "$T/sm_cut.ftz" "$L" 1 3 5
quant hs_sub hs_cut "$T/train5.txt" -qnorm -cutoff 300 && check "$T/hs_cut.ftz" "$L" 1 3 5
quant sm300 sm300_qout "$T/train300.txt" -qnorm -qout && check "$T/sm300_qout.ftz" "$L" 1 3 300
quant hs300 hs300_qout "$T/train300.txt" -qout -cutoff 400 -retrain -epoch 1 && check "$T/hs300_qout.ftz" "$L" 1 3 300
quant plain plain_q "$T/train5.txt" -qnorm && check "$T/plain_q.ftz" "$L" 1 5

# --- real models ------------------------------------------------------------------------------------------------------
lid=
for f in models/lid.176.ftz ../shared/models/langid/fasttext-lid176/lid.176.ftz; do
    [ -f "$f" ] && { lid=$f; break; }
done
[ -n "$lid" ] && check "$lid" "$lines_real" 1 3 176
for f in ../shared/models/sentiment/fasttext-amazon-review-polarity/amazon_review_polarity.ftz; do
    [ -f "$f" ] && check "$f" "$lines_real" 1 2
done
for f in ../shared/models/sentiment/fasttext-amazon-review-full/amazon_review_full.ftz; do
    [ -f "$f" ] && check "$f" "$lines_real" 1 3 5
done

finish
