#!/bin/bash
# CPU dtypes end to end: the sentiment and ner stages with dtype = "int8" / "bf16" through `nlpd pipe` (labels
# equal transformers' fp32 ones except where fp32's top-2 margin is within 10% of the largest |logit|, the dtype
# in meta.models), `nlpd infer --dtype`, a bad dtype refused by `nlpd check`, and an explicit dtype the CPU cannot
# run (DNNL_MAX_CPU_ISA=AVX2) refused with the reason while kernels.dtype falls back to fp32 with a log line.
# usage: tests/models/test_dtype_pipe.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

dir=tests/fixtures/hf-tiny/distilbert-seq-cls
python3 - "$dir/golden.json" > "$T/in.jsonl" << 'PY'
import json, sys
g = json.load(open(sys.argv[1]))
for i, e in enumerate(g["examples"]):
    if isinstance(e["text"], str) and not e.get("text_pair"):
        print(json.dumps({"id": str(i), "text": e["text"]}))
PY
for dt in int8 bf16; do
    printf 'kernels: { threads = 2; };\npipeline = ( { stage = "sentiment"; model = "%s"; dtype = "%s"; } );\n' \
        "$dir" "$dt" > "$T/$dt.conf"
    if ! "$NLPD" pipe -c "$T/$dt.conf" < "$T/in.jsonl" > "$T/$dt.out" 2> "$T/$dt.err"; then
        if grep -q "needs AVX512" "$T/$dt.err"; then
            ok "sentiment $dt: this CPU cannot run it, refused with the reason ($(grep -o 'needs[^;]*' "$T/$dt.err" | head -1))"
        else
            nok "sentiment $dt" "nlpd pipe failed: $(tail -n 2 "$T/$dt.err")"
        fi
        continue
    fi
    if msg=$(python3 - "$dir" "$T/$dt.out" "$dt" 2>&1 << 'PY'
import json, sys
d, out, dt = sys.argv[1:4]
g = json.load(open(d + "/golden.json"))
cfg = json.load(open(d + "/config.json"))
labels = [cfg["id2label"][str(i)].lower() for i in range(len(cfg["id2label"]))]
byid = {r["id"]: r for r in map(json.loads, open(out))}
big = max(abs(x) for e in g["examples"] for x in e["logits"])
n = excused = 0
for i, e in enumerate(g["examples"]):
    if not isinstance(e["text"], str) or e.get("text_pair"):
        continue
    r = byid[str(i)]
    assert r["meta"]["models"]["sentiment"].endswith("+" + dt), r["meta"]["models"]
    lg = sorted(e["logits"], reverse=True)
    best = labels[e["logits"].index(lg[0])]
    if r["sentiment"]["label"] != best:
        assert lg[0] - lg[1] < 0.1 * big, (i, r["sentiment"], best, lg)
        excused += 1
    n += 1
assert n > 0
print(f"{n} texts, labels equal fp32's but {excused} near-ties; meta.models ...+{dt}")
PY
    ); then ok "sentiment $dt: $msg"; else nok "sentiment $dt" "$msg"; fi
done

printf 'kernels: { threads = 1; };\npipeline = ( { stage = "ner"; model = "tests/fixtures/hf-tiny/bert-token-cls"; dtype = "int8"; } );\n' > "$T/ner.conf"
if echo '{"id":"1","text":"Angela Merkel visited Paris."}' | "$NLPD" pipe -c "$T/ner.conf" > "$T/ner.out" 2> "$T/ner.err" &&
    grep -q '"ner":"bert-token-cls@sha256:[0-9a-f]*+int8"' "$T/ner.out"; then
    ok "ner int8 runs, meta.models says +int8"
elif grep -q "needs AVX512" "$T/ner.err"; then
    ok "ner int8: refused on this CPU with the reason"
else
    nok "ner int8" "$(tail -n 2 "$T/ner.err") $(head -c 300 "$T/ner.out")"
fi

printf 'kernels: { threads = 1; };\npipeline = ( { stage = "translate"; model = "tests/fixtures/hf-tiny/marian-mt"; dtype = "int8"; } );\n' > "$T/mt.conf"
if echo '{"id":"1","text":"Hello world!"}' | "$NLPD" pipe -c "$T/mt.conf" > "$T/mt.out" 2> "$T/mt.err" &&
    grep -q '"translate":"marian-mt@sha256:[0-9a-f]*+int8"' "$T/mt.out" && grep -q '"translation":{"text"' "$T/mt.out"; then
    ok "translate int8 runs, meta.models says +int8"
elif grep -q "needs AVX512" "$T/mt.err"; then
    ok "translate int8: refused on this CPU with the reason"
else
    nok "translate int8" "$(tail -n 2 "$T/mt.err") $(head -c 300 "$T/mt.out")"
fi

echo '{"text": "Hello world!"}' > "$T/one.jsonl"
if "$NLPD" infer --model "$dir" --dtype int8 < "$T/one.jsonl" > "$T/infer.out" 2> "$T/infer.err" &&
    grep -q '"logits"' "$T/infer.out"; then
    ok "nlpd infer --dtype int8"
elif grep -q "needs AVX512" "$T/infer.err"; then
    ok "nlpd infer --dtype int8: refused on this CPU with the reason"
else
    nok "nlpd infer --dtype int8" "$(cat "$T/infer.err")"
fi
if ! "$NLPD" infer --model "$dir" --dtype int4 < "$T/one.jsonl" > /dev/null 2> "$T/bad.err" &&
    grep -q "int8" "$T/bad.err"; then
    ok "nlpd infer --dtype int4 refused, listing the dtypes"
else
    nok "nlpd infer --dtype int4" "$(cat "$T/bad.err")"
fi

printf 'pipeline = ( { stage = "sentiment"; model = "%s"; dtype = "int4"; } );\n' "$dir" > "$T/bad.conf"
if ! "$NLPD" check -c "$T/bad.conf" > "$T/check.out" 2>&1 && grep -q "dtype" "$T/check.out"; then
    ok "nlpd check refuses dtype = \"int4\" ($(grep -m1 dtype "$T/check.out"))"
else
    nok "nlpd check dtype int4" "$(cat "$T/check.out")"
fi

# a CPU without VNNI / AVX512-BF16: an explicit request fails with the reason, kernels.dtype falls back
if DNNL_MAX_CPU_ISA=AVX2 "$NLPD" pipe -c "$T/int8.conf" < "$T/in.jsonl" > /dev/null 2> "$T/noisa.err"; then
    nok "dtype int8 without VNNI" "accepted"
elif grep -q "VNNI" "$T/noisa.err"; then
    ok "dtype = \"int8\" without VNNI: $(grep -o 'int8 needs[^)]*' "$T/noisa.err" | head -1)"
else
    nok "dtype int8 without VNNI" "$(tail -n 2 "$T/noisa.err")"
fi
printf 'kernels: { threads = 1; dtype = "int8"; };\npipeline = ( { stage = "sentiment"; model = "%s"; } );\n' \
    "$dir" > "$T/dflt.conf"
if DNNL_MAX_CPU_ISA=AVX2 "$NLPD" pipe -c "$T/dflt.conf" < "$T/in.jsonl" > "$T/dflt.out" 2> "$T/dflt.err" &&
    grep -q "falls back to fp32" "$T/dflt.err" && ! grep -q '+int8' "$T/dflt.out"; then
    ok "kernels.dtype = \"int8\" without VNNI: fp32, logged ($(grep -o 'dtype int8 falls back[^)]*' "$T/dflt.err" | head -1))"
else
    nok "kernels.dtype int8 fallback" "$(tail -n 3 "$T/dflt.err")"
fi

finish
