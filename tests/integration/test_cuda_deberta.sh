#!/bin/sh
# DeBERTa-v2 on the CUDA backend under the host emulator (kernels/cuda/emul/): the hf-tiny DeBERTa fixtures'
# golden examples through `nlpd infer --backend cuda --dtype fp32` (strict) against transformers' logits, within the
# goldens' own tolerance (atol 1e-4 + rtol 1e-4), and `--backend auto` picking CUDA for them.
# usage: tests/integration/test_cuda_deberta.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=1500
NLPD=${1:-build/nlpd}
if [ ! -f build/emul/libnlpd_cuda.so ]; then
    echo "skip: needs build/emul/libnlpd_cuda.so (make all)"
    finish
fi
T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT
export NLPD_CUDA_EMULATOR=1 NLPD_LIBDIR=build/emul NLPD_CUDA_ARENA_MB=64 NLPD_CUDA_MATH=strict

for m in deberta-v2-seq-cls deberta-v2-token-cls; do
    dir=tests/fixtures/hf-tiny/$m
    python3 -c 'import json, sys
for e in json.load(open(sys.argv[1]))["examples"]:
    print(json.dumps({"input_ids": e["input_ids"]}))' "$dir/golden.json" > "$T/in.jsonl" || exit 2
    n=$(wc -l < "$T/in.jsonl")
    if timeout 300 "$NLPD" infer --model "$dir" --backend cuda --dtype fp32 < "$T/in.jsonl" > "$T/out.jsonl" 2> "$T/err"; then
        grep -q "kernels: backend cuda" "$T/err" && ok "$m: infer --backend cuda runs on the CUDA backend" \
            || nok "$m: backend" "$(cat "$T/err")"
        why=$(python3 -c 'import json, sys
gold = json.load(open(sys.argv[1]))["examples"]
out = [json.loads(l) for l in open(sys.argv[2])]
if len(out) != len(gold):
    sys.exit("%d outputs for %d examples" % (len(out), len(gold)))
worst = 0.0
for i, (g, o) in enumerate(zip(gold, out)):
    want, got = g["logits"], o.get("logits", o.get("token_logits"))
    if got is None or len(got) != len(want):
        sys.exit("example %d: %s" % (i, json.dumps(o)[:200]))
    if want and isinstance(want[0], list):  # token classification: one row per token
        pairs = [(a, b) for wr, gr in zip(want, got) for a, b in zip(wr, gr)]
    else:
        pairs = list(zip(want, got))
    for a, b in pairs:
        if not abs(a - b) <= 1e-4 + 1e-4 * abs(a):
            sys.exit("example %d: golden %.7g, cuda %.7g" % (i, a, b))
        worst = max(worst, abs(a - b))
print("max |logit - golden| %.3g" % worst)' "$dir/golden.json" "$T/out.jsonl" 2>&1)
        case $why in
        "max |"*) ok "$m: $n golden examples within atol 1e-4 + rtol 1e-4" "$why" ;;
        *) nok "$m: goldens" "$why" ;;
        esac
    else
        nok "$m: infer --backend cuda" "exit $?: $(cat "$T/err")"
    fi
done

# auto: DeBERTa's op is no longer a reason to fall back to the CPU
dir=tests/fixtures/hf-tiny/deberta-v2-seq-cls
python3 -c 'import json, sys
print(json.dumps({"input_ids": json.load(open(sys.argv[1]))["examples"][0]["input_ids"]}))' "$dir/golden.json" \
    > "$T/one.jsonl" || exit 2
if timeout 120 "$NLPD" infer --model "$dir" --backend auto < "$T/one.jsonl" > "$T/out.jsonl" 2> "$T/err"; then
    grep -q "kernels: backend cuda" "$T/err" && ok "auto runs DeBERTa on CUDA" || nok "auto" "$(cat "$T/err")"
else
    nok "infer --backend auto" "exit $?: $(cat "$T/err")"
fi
finish
