#!/bin/bash
# The sentiment stage on Hugging Face folders through `nlpd pipe`: labels and scores must equal the softmax
# of transformers' golden logits (within half the logit bar, 1e-4 + 1e-4 |logit|), for BERT, DistilBERT, XLM-R and DeBERTa-v3 fixtures, batched with records of
# other lengths; the label map, `scores`, and per-language `models` routing on lang.code.
# usage: tests/models/test_sentiment_hf.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

for fx in bert-seq-cls distilbert-seq-cls xlm-roberta-seq-cls deberta-v2-seq-cls; do
    dir=tests/fixtures/hf-tiny/$fx
    {
        echo 'batch: { max_records = 3; };'
        echo 'kernels: { threads = 2; };'
        echo "pipeline = ( { stage = \"sentiment\"; model = \"$dir\"; scores = true; max_tokens = 40; } );"
    } > "$T/$fx.conf"
    python3 - "$dir/golden.json" > "$T/$fx.in" << 'PY'
import json, sys
g = json.load(open(sys.argv[1]))
for i, e in enumerate(g["examples"]):
    if isinstance(e["text"], str) and not e.get("text_pair"):  # the stage classifies single texts
        print(json.dumps({"id": str(i), "text": e["text"]}))
PY
    if ! "$NLPD" pipe -c "$T/$fx.conf" < "$T/$fx.in" > "$T/$fx.out" 2> "$T/$fx.err"; then
        nok "$fx" "nlpd pipe failed: $(tail -n 2 "$T/$fx.err")"
        continue
    fi
    if msg=$(python3 - "$dir" "$T/$fx.out" 2>&1 << 'PY'
import json, math, sys
d, out = sys.argv[1], sys.argv[2]
g = json.load(open(d + "/golden.json"))
cfg = json.load(open(d + "/config.json"))
labels = [cfg["id2label"][str(i)].lower() for i in range(len(cfg["id2label"]))]
byid = {r["id"]: r for r in map(json.loads, open(out))}
worst, n = 0.0, 0
for i, e in enumerate(g["examples"]):
    if not isinstance(e["text"], str) or e.get("text_pair"):
        continue
    lg = e["logits"]
    m = max(lg)
    ex = [math.exp(x - m) for x in lg]
    p = [x / sum(ex) for x in ex]
    best = max(range(len(p)), key=lambda k: p[k])
    s = byid[str(i)]["sentiment"]
    assert s["label"] == labels[best], (i, s, labels[best])
    # nlpd's logits are within eps = 1e-4 + 1e-4 |logit| of the goldens (the parity bar); softmax moves a
    # probability by at most p(1-p) * 2 eps <= eps / 2 (float32 summation order differs across CPUs/BLAS kernels).
    tol = (1e-4 + 1e-4 * max(abs(x) for x in lg)) / 2
    worst = max(worst, abs(s["score"] - p[best]) / tol)
    for k, sc in enumerate(s["scores"]):
        assert sc["label"] == labels[k]
        worst = max(worst, abs(sc["score"] - p[k]) / tol)
    n += 1
assert n > 0 and worst <= 1, worst
print(f"{n} texts, max |dp| {worst:.2f} of the bound")
PY
    ); then
        ok "$fx: softmax of golden logits ($msg)"
    else
        nok "$fx" "$msg"
    fi
done

# Label map, and a model per language chosen on lang.code (records of other languages are left alone).
{
    echo 'pipeline = ('
    echo '  { stage = "langid"; model = "models/lid.176.ftz"; },'
    echo '  { stage = "sentiment";'
    echo '    models = ( ("en", "tests/fixtures/hf-tiny/bert-seq-cls"), ("fr", "models/amazon_review_polarity.ftz") );'
    echo '    labels = ( ("negative", "NEG"), ("positive", "POS"), ("__label__1", "NEG"), ("__label__2", "POS") ); }'
    echo ');'
} > "$T/route.conf"
printf '%s\n' '{"id":"en","text":"This is a long English sentence about free software licenses."}' \
    '{"id":"de","text":"Das ist ein deutscher Satz ueber freie Software und Lizenzen."}' \
    '{"id":"fr","text":"Ceci est une phrase en francais sur les logiciels libres."}' > "$T/route.in"
if [ -f models/lid.176.ftz ] && "$NLPD" pipe -c "$T/route.conf" < "$T/route.in" > "$T/route.out" 2> "$T/route.err" &&
    python3 - "$T/route.out" 2> "$T/route.py" << 'PY'
import json, sys
r = {o["id"]: o for o in map(json.loads, open(sys.argv[1]))}
assert r["en"]["lang"]["code"] == "en" and r["en"]["sentiment"]["label"] in ("NEG", "neutral", "POS"), r["en"]
assert r["de"]["sentiment"] is None, r["de"]
assert r["fr"]["lang"]["code"] == "fr" and r["fr"]["sentiment"]["label"] in ("NEG", "POS"), r["fr"]
PY
then
    ok "models per language and label map"
else
    nok "models per language and label map" "$(cat "$T/route.err" "$T/route.py" 2> /dev/null | tail -n 3)"
fi

# Configuration errors.
echo 'pipeline = ( { stage = "sentiment"; } );' > "$T/none.conf"
if ! "$NLPD" check -c "$T/none.conf" > /dev/null 2> "$T/none.err" && grep -q "either model or models" "$T/none.err"; then
    ok "neither model nor models"
else
    nok "neither model nor models" "$(cat "$T/none.err")"
fi
echo 'pipeline = ( { stage = "sentiment"; model = "tests/fixtures/hf-tiny/bert-token-cls"; } );' > "$T/tok.conf"
if ! "$NLPD" check -c "$T/tok.conf" > /dev/null 2> "$T/tok.err" &&
    grep -q "not a sequence-classification model" "$T/tok.err"; then
    ok "token-classification folder refused"
else
    nok "token-classification folder refused" "$(cat "$T/tok.err")"
fi
finish
