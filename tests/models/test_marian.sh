#!/bin/sh
# Marian (OPUS-MT) parity of `nlpd infer` with transformers' goldens (tests/fixtures/hf-tiny/marian-mt/golden.json):
# greedy generate ids exact (forced eos at max_length 20, and without it), in one padded batch of 5 and one by
# one; encoder output, first-step logits and the per-step top-5 within 1e-3 (float32 rounding moves some of this
# model's logits by up to 3e-4); texts through the Marian tokenizer give the golden input ids. Then beam search
# and random model shapes against tests/models/marian_ref.py (an independent PyTorch reference written from
# transformers' semantics), when /usr/bin/python3 has torch. Prints `N passed, N failed`.
# usage: tests/models/test_marian.sh [path/to/nlpd]
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
DIR=tests/fixtures/hf-tiny/marian-mt
TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT
ok() { pass=$((pass + 1)); }
ko() {
    echo "FAIL $1"
    fail=$((fail + 1))
}

python3 - "$DIR/golden.json" > "$TMP/ids.jsonl" << 'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
for e in g["examples"]:
    print(json.dumps({"input_ids": e["input_ids"]}))
EOF

# compare OUT.jsonl with the goldens; $1 = name, $2 = output file, $3 = which ids key
check() {
    python3 - "$DIR/golden.json" "$2" "$3" << 'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
out = [json.loads(l) for l in open(sys.argv[2])]
key = sys.argv[3]
bad = []
if len(out) != len(g["examples"]):
    bad.append("%d lines for %d examples" % (len(out), len(g["examples"])))
for i, (e, o) in enumerate(zip(g["examples"], out)):
    if o.get("output_ids") != e[key]:
        bad.append("example %d: %s != %s" % (i, o.get("output_ids"), e[key]))
    if "encoder_last_hidden_state" in o:
        d = max(abs(a - b) for ra, rb in zip(o["encoder_last_hidden_state"], e["encoder_last_hidden_state"])
                for a, b in zip(ra, rb))
        if d > 1e-3:
            bad.append("example %d: encoder output off by %g" % (i, d))
        d = max(abs(a - b) for a, b in zip(o["first_step_logits"], e["first_step_logits"]))
        if d > 1e-3 or len(o["first_step_logits"]) != len(e["first_step_logits"]):
            bad.append("example %d: first-step logits off by %g" % (i, d))
        for s, (a, b) in enumerate(zip(o["steps_top5"], e["greedy_steps_top5"])):
            if a["ids"] != b["top5_ids"] or max(abs(x - y) for x, y in zip(a["logits"], b["top5_logits"])) > 1e-3:
                bad.append("example %d step %d: top-5 %s != %s" % (i, s, a, b))
                break
for b in bad:
    print("   ", b)
sys.exit(1 if bad else 0)
EOF
}

for batch in 5 1; do
    if "$NLPD" infer --model "$DIR" --max-length 20 --batch $batch --debug < "$TMP/ids.jsonl" > "$TMP/out.jsonl" 2> "$TMP/err" &&
        check greedy "$TMP/out.jsonl" generate_output_ids; then ok; else ko "greedy, batch $batch $(cat "$TMP/err")"; fi
    if "$NLPD" infer --model "$DIR" --max-length 20 --forced-eos-token-id -1 --batch $batch < "$TMP/ids.jsonl" \
        > "$TMP/out.jsonl" 2> "$TMP/err" &&
        check greedy "$TMP/out.jsonl" greedy_no_forced_eos_ids; then ok; else ko "greedy without forced eos, batch $batch"; fi
done

# texts: the Marian tokenizer's ids must be the golden ones, and the generated ids the same as from the ids
python3 - "$DIR/golden.json" > "$TMP/texts.jsonl" << 'EOF'
import json, sys
for e in json.load(open(sys.argv[1]))["examples"]:
    print(json.dumps({"text": e["text"]}))
EOF
if "$NLPD" infer --model "$DIR" --max-length 20 < "$TMP/texts.jsonl" > "$TMP/out.jsonl" 2> "$TMP/err" &&
    python3 - "$DIR/golden.json" "$TMP/out.jsonl" << 'EOF'; then ok; else ko "texts through the tokenizer"; fi
import json, sys
g = json.load(open(sys.argv[1]))["examples"]
out = [json.loads(l) for l in open(sys.argv[2])]
bad = [i for i, (e, o) in enumerate(zip(g, out))
       if o.get("input_ids") != e["input_ids"] or o.get("output_ids") != e["generate_output_ids"]
       or not isinstance(o.get("text"), str)]
for i in bad:
    print("    example %d: %s" % (i, out[i]))
sys.exit(1 if bad or len(out) != len(g) else 0)
EOF

# bad lines: an error line each, processing goes on
printf '%s\n' 'not json' '{"input_ids": []}' '{"input_ids": [1, "x"]}' '{"input_ids": [5000]}' \
    '{"input_ids": [3, 4, 0]}' > "$TMP/bad.jsonl"
if "$NLPD" infer --model "$DIR" --max-length 5 --batch 1 < "$TMP/bad.jsonl" > "$TMP/out.jsonl" 2> "$TMP/err" &&
    python3 - "$TMP/out.jsonl" << 'EOF'; then ok; else ko "bad lines"; fi
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
errs = [o for o in out if "error" in o]
assert len(out) == 5 and len(errs) == 4, out
assert "out of range" in out[3]["error"], out[3]
assert len(out[4]["output_ids"]) <= 5, out[4]
EOF

# beam search and other shapes against the independent reference
PY=/usr/bin/python3
if [ -f tests/models/marian_ref.py ] && $PY -c 'import torch, numpy' 2> /dev/null; then
    if $PY tests/models/marian_ref.py --self-test "$DIR/golden.json" > "$TMP/ref.log" 2>&1; then ok; else
        ko "reference self-test: $(tail -3 "$TMP/ref.log")"
    fi
    sh tests/models/test_marian_beam.sh "$NLPD" > "$TMP/beam.log" 2>&1
    tail -1 "$TMP/beam.log"
    bp=$(tail -1 "$TMP/beam.log" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')
    if [ -n "$bp" ]; then
        pass=$((pass + ${bp% *}))
        fail=$((fail + ${bp#* }))
        [ "${bp#* }" = 0 ] || grep FAIL "$TMP/beam.log" | head -20
    else
        ko "beam-search suite did not finish: $(tail -3 "$TMP/beam.log")"
    fi
else
    echo "skipped: beam search against the PyTorch reference (needs /usr/bin/python3 with torch)"
fi

finish
