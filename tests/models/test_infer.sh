#!/bin/sh
# `nlpd infer` end to end on the hf-tiny goldens: the texts of every example go through the C tokenizer and the
# encoder; ids must equal transformers' exactly and logits agree within atol 1e-4 + rtol 1e-4 (token logits on
# every real token). Bad lines give {"error", "line"} and processing goes on. Prints `N passed, N failed`.
# usage: tests/models/test_infer.sh [path/to/nlpd]
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT

for m in bert-seq-cls bert-token-cls distilbert-seq-cls xlm-roberta-seq-cls; do
    dir=tests/fixtures/hf-tiny/$m
    python3 - "$dir/golden.json" > "$TMP/in.jsonl" << 'PYEOF'
import json, sys
g = json.load(open(sys.argv[1]))
for e in g["examples"]:
    print(json.dumps({"text": e["text"], "text_pair": e["text_pair"]}))
print("not json")
print(json.dumps({"text_pair": "no text"}))
# the padded batch rows as raw ids (trailing padding dropped)
b = g["batch"]
for i, (ids, mask) in enumerate(zip(b["input_ids"], b["attention_mask"])):
    line = {"input_ids": ids[: sum(mask)]}
    if "token_type_ids" in b:
        line["token_type_ids"] = b["token_type_ids"][i][: sum(mask)]
    print(json.dumps(line))
PYEOF
    if ! "$NLPD" infer --model "$dir" < "$TMP/in.jsonl" > "$TMP/out.jsonl" 2> "$TMP/err"; then
        echo "FAIL $m: nlpd infer exited non-zero: $(cat "$TMP/err")"
        fail=$((fail + 1))
        continue
    fi
    if python3 - "$dir/golden.json" "$TMP/out.jsonl" "$m" << 'PYEOF'; then
import json, sys
g = json.load(open(sys.argv[1]))
out = [json.loads(l) for l in open(sys.argv[2])]
name = sys.argv[3]
ex = g["examples"]
bad = []
if len(out) != 2 * len(ex) + 2:
    bad.append(f"{len(out)} output lines for {2 * len(ex) + 2} input lines")
worst = 0.0

def flat(v):
    return [x for r in v for x in r] if v and isinstance(v[0], list) else v

def compare(i, o, e):
    global worst
    if "error" in o:
        bad.append(f"line {i + 1}: {o['error']}")
        return
    if o["input_ids"] != e["input_ids"]:
        bad.append(f"line {i + 1}: ids {o['input_ids']} != {e['input_ids']}")
        return
    got = flat(o.get("logits") or o.get("token_logits"))
    want = flat(e["logits"])
    if len(got) != len(want):
        bad.append(f"line {i + 1}: {len(got)} logits, expected {len(want)}")
        return
    for a, b in zip(got, want):
        worst = max(worst, abs(a - b))
        if abs(a - b) > 1e-4 + 1e-4 * abs(b):
            bad.append(f"line {i + 1}: logit {a} vs {b}")
            return

for i, e in enumerate(ex):
    compare(i, out[i], e)
    compare(len(ex) + 2 + i, out[len(ex) + 2 + i], e)
for i in (len(ex), len(ex) + 1):
    if "error" not in out[i] or out[i].get("line") != i + 1:
        bad.append(f"line {i + 1}: expected an error, got {out[i]}")
for b in bad:
    print(f"FAIL {name}: {b}")
print(f"{name}: {len(ex)} texts + {len(ex)} id lines, max |logit diff| {worst:.3g}")
sys.exit(1 if bad else 0)
PYEOF
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
    fi
done

# tokenize: ids and the shape of the output
printf '{"text": "Hello world!"}\n{"text": 3}\n' | "$NLPD" tokenize --model tests/fixtures/hf-tiny/bert-seq-cls > "$TMP/tok.jsonl"
if python3 -c '
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert a["ids"] == [2, 54, 77, 954, 87, 69, 902, 84, 76, 5, 3], a
assert a["tokens"][0] == "[CLS]" and len(a["offsets"]) == len(a["ids"]) and a["offsets"][1] == [0, 1], a
assert b == {"error": "\"text\" is not a string", "line": 2}, b
' "$TMP/tok.jsonl"; then
    pass=$((pass + 1))
else
    echo "FAIL tokenize"
    fail=$((fail + 1))
fi

# usage errors and a bad model folder exit non-zero with a message
if "$NLPD" infer < /dev/null 2> /dev/null; then
    echo "FAIL: infer without --model succeeded"
    fail=$((fail + 1))
else
    pass=$((pass + 1))
fi
if "$NLPD" infer --model "$TMP/none" < /dev/null 2> "$TMP/err" || ! grep -qF "model folder '$TMP/none': No such file or directory" "$TMP/err"; then
    echo "FAIL: infer on a missing folder: $(cat "$TMP/err")"
    fail=$((fail + 1))
else
    pass=$((pass + 1))
fi

finish
