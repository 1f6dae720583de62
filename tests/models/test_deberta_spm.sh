#!/bin/bash
# DeBERTa-v2/v3 folders without tokenizer.json (spm.model + tokenizer_config.json, the DebertaV2Converter
# tokenizer built in tokenizer_deberta.c): the golden ids and token type ids of both DeBERTa fixtures (pairs and
# truncation included) exactly, the same ids as the folder's tokenizer.json on the 4321 tokenizer cases, and the
# lower-casing / split_by_punct options reaching the tokenizer.
# Usage: tests/models/test_deberta_spm.sh [build dir] (default build). Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
TOOL=${1:-build}/tests/tool_tokenize
FIX=tests/fixtures/hf-tiny
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/lib.sh
[ -x "$TOOL" ] || { nok tool "$TOOL missing (make)"; finish; }

spm_copy() { # spm_copy FIXTURE DEST: the folder without tokenizer.json
    mkdir -p "$2"
    for f in spm.model tokenizer_config.json special_tokens_map.json added_tokens.json config.json; do
        [ -f "$FIX/$1/$f" ] && cp "$FIX/$1/$f" "$2/"
    done
}

for fx in deberta-v2-seq-cls deberta-v2-token-cls; do
    spm_copy $fx "$T/$fx"
    python3 - "$FIX/$fx" > "$T/$fx.in" << 'PY'
import json, sys
d = sys.argv[1]
g = json.load(open(d + ("/golden.json" if "seq" in d else "/pipeline_golden.json")))
m = json.load(open(d + "/tokenizer_config.json"))["model_max_length"]
for e in g["examples"]:
    o = {"text": e["text"], "max_length": m}
    if e.get("text_pair"):
        o["text_pair"] = e["text_pair"]
    print(json.dumps(o))
PY
    if ! "$TOOL" "$T/$fx" < "$T/$fx.in" > "$T/$fx.out" 2> "$T/$fx.err"; then
        nok "$fx spm.model" "$(cat "$T/$fx.err")"
        continue
    fi
    if msg=$(python3 - "$FIX/$fx" "$T/$fx.out" 2>&1 << 'PY'
import json, sys
d = sys.argv[1]
g = json.load(open(d + ("/golden.json" if "seq" in d else "/pipeline_golden.json")))
out = [json.loads(l) for l in open(sys.argv[2])]
assert len(out) == len(g["examples"]), (len(out), len(g["examples"]))
for e, o in zip(g["examples"], out):
    assert o["ids"] == e["input_ids"], (e["text"][:40], o["ids"], e["input_ids"])
    if "token_type_ids" in e:
        assert o["type_ids"] == e["token_type_ids"], (e["text"][:40], o["type_ids"])
print(len(out), "examples")
PY
    ); then ok "$fx spm.model: golden ids and type ids ($msg)"; else nok "$fx spm.model" "$msg"; fi
done

# the 4321 tokenizer cases: spm.model-only folder vs the folder's tokenizer.json, same ids
python3 -c '
import json, sys
for c in json.load(open(sys.argv[1])):
    print(json.dumps({"text": c["text"]}))' "$FIX/_tokenizer_cases/cases.json" > "$T/cases.in"
"$TOOL" "$FIX/deberta-v2-seq-cls" < "$T/cases.in" > "$T/cases.json.out" 2> "$T/cases.err"
"$TOOL" "$T/deberta-v2-seq-cls" < "$T/cases.in" > "$T/cases.spm.out" 2>> "$T/cases.err"
n=$(wc -l < "$T/cases.in")
if [ "$n" -ge 4000 ] && cmp -s "$T/cases.json.out" "$T/cases.spm.out"; then
    ok "tokenizer cases: spm.model folder = tokenizer.json folder on all $n texts (ids, tokens, offsets, types)"
else
    nok "tokenizer cases" "$(diff "$T/cases.json.out" "$T/cases.spm.out" | head -5; head -3 "$T/cases.err")"
fi

# options: do_lower_case lowers, split_by_punct isolates punctuation, a missing spm.model piece for [CLS] errors
python3 - "$T/deberta-v2-seq-cls/tokenizer_config.json" "$T/opt" << 'PY'
import json, os, shutil, sys
src, out = sys.argv[1], sys.argv[2]
shutil.copytree(os.path.dirname(src), out)
c = json.load(open(src))
c["do_lower_case"] = True
c["split_by_punct"] = True
json.dump(c, open(out + "/tokenizer_config.json", "w"))
PY
printf '%s\n' '{"text":"HELLO World!"}' '{"text":"hello world!"}' > "$T/opt.in"
if "$TOOL" "$T/opt" < "$T/opt.in" > "$T/opt.out" 2> "$T/opt.err" &&
    python3 - "$T/opt.out" << 'PY'
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert a["ids"] == b["ids"], (a, b)  # lower-cased
assert a["tokens"][-3:] == ["\u2581", "!", "[SEP]"], a  # "!" isolated: its own word, Metaspace-prefixed
PY
then ok "do_lower_case and split_by_punct"; else nok "options" "$(cat "$T/opt.out" "$T/opt.err")"; fi
mkdir -p "$T/bad" && printf 'not a protobuf\xff\xff\xff' > "$T/bad/spm.model"
if "$TOOL" "$T/bad" < "$T/opt.in" > /dev/null 2> "$T/bad.err"; then
    nok "corrupt spm.model" "accepted"
elif grep -q "spm.model" "$T/bad.err"; then ok "corrupt spm.model: $(head -c 120 "$T/bad.err")"; else nok "corrupt spm.model" "$(cat "$T/bad.err")"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
