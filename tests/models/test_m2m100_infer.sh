#!/bin/sh
# `nlpd infer` on the M2M100 / NLLB fixtures: lines {"text", "src_lang", "tgt_lang"} (mixed target languages in
# one --batch, so the per-target sub-batches are exercised) give transformers' greedy and beam ids exactly, and
# the decoded text after the forced language token; a bad language code is a per-line error. Prints
# `N passed, N failed`. usage: tests/models/test_m2m100_infer.sh [path/to/nlpd]
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=${1:-build/nlpd}
TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
for fx in m2m100-mt nllb-mt; do
    DIR=tests/fixtures/hf-tiny/$fx
    python3 - "$DIR/golden.json" > "$TMP/in.jsonl" << 'EOF2'
import json, sys
g = json.load(open(sys.argv[1]))
for e in g["examples"]:
    print(json.dumps({"text": e["text"], "src_lang": e["src_lang"], "tgt_lang": e["tgt_lang"]}))
print(json.dumps({"text": "x", "src_lang": "xx_Bad", "tgt_lang": g["examples"][0]["tgt_lang"]}))
EOF2
    ML=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['generate_kwargs']['max_length'])" "$DIR/golden.json")
    for beams in 1 4; do
        if ! timeout 120 "$NLPD" infer --model "$DIR" --max-length "$ML" --num-beams $beams --batch 5 \
            < "$TMP/in.jsonl" > "$TMP/out.jsonl"; then
            echo "FAIL $fx beams $beams: nlpd infer failed"
            fail=$((fail + 1))
            continue
        fi
        if python3 - "$DIR/golden.json" "$TMP/out.jsonl" $beams << 'EOF2'
import json, sys
g = json.load(open(sys.argv[1]))
out = [json.loads(l) for l in open(sys.argv[2])]
key = "beam_output_ids" if sys.argv[3] != "1" else "generate_output_ids"
bad = []
for i, e in enumerate(g["examples"]):
    o = out[i]
    if o.get("input_ids") != e["input_ids"] or o.get("output_ids") != e[key]:
        bad.append("example %d: %s" % (i, o))
    if key == "generate_output_ids" and "__" not in e["generate_decoded_text"] and o.get("text") != e["generate_decoded_text"]:
        bad.append("example %d text %r != %r" % (i, o.get("text"), e["generate_decoded_text"]))
if "not a language of this model" not in out[-1].get("error", ""):
    bad.append("bad src_lang: %s" % out[-1])
for b in bad:
    print("   ", b)
sys.exit(1 if bad else 0)
EOF2
        then pass=$((pass + 1)); else echo "FAIL $fx beams $beams"; fail=$((fail + 1)); fi
    done
done
# nlpd tokenize: the golden input ids and tokens, the language token per line
for fx in m2m100-mt nllb-mt; do
    DIR=tests/fixtures/hf-tiny/$fx
    # --src-lang: the M2M100 / NLLB tokenizer also where the folder has a tokenizer.json (nllb-mt)
    python3 -c '
import json, sys
for e in json.load(open(sys.argv[1]))["examples"]:
    print(json.dumps({"text": e["text"], "src_lang": e["src_lang"]}))' "$DIR/golden.json" |
        timeout 60 "$NLPD" tokenize --model "$DIR" --src-lang "$(python3 -c '
import json, sys; print(json.load(open(sys.argv[1]))["examples"][0]["src_lang"])' "$DIR/golden.json")" \
        > "$TMP/tok.jsonl"
    if python3 -c '
import json, sys
g = json.load(open(sys.argv[1]))["examples"]
o = [json.loads(l) for l in open(sys.argv[2])]
sys.exit(0 if len(o) == len(g) and all(a.get("ids") == e["input_ids"] and a.get("tokens") == e["tokens"]
                                       for a, e in zip(o, g)) else 1)' "$DIR/golden.json" "$TMP/tok.jsonl"; then
        pass=$((pass + 1))
    else
        echo "FAIL $fx: nlpd tokenize ids / tokens"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
