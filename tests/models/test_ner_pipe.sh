#!/bin/bash
# The ner stage through the real CLI (`nlpd pipe`) on tests/fixtures/hf-tiny/bert-token-cls (or $NER_MODEL:
# deberta-v2-token-cls):
#   parity:  for each aggregation strategy (none simple first average max), `entities` equal the transformers
#            pipeline's (pipeline_golden.json): entity/entity_group, word, start, end (and index) exactly, score
#            within 1e-4 — the texts that fit the model with the default windowing, and all 12 texts (the long one
#            cut as the pipeline cuts it) with `truncate = true`;
#   windows: a ~10k-character text (hundreds of tokens, many windows): with aggregation none and no ignored
#            labels every token comes out exactly once, in order, with the tokenizer's offsets (nothing lost or
#            duplicated at window boundaries) for several strides; grouped strategies give ordered,
#            non-overlapping entities that cover the same tokens; and the words of the entities agree with
#            runs on the same text cut into sentences (reported).
# Usage: test_ner_pipe.sh [NLPD_BINARY] (default build/nlpd). Prints `ok - ...`/`not ok - ...` and `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=3000
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
MODEL=${NER_MODEL:-tests/fixtures/hf-tiny/bert-token-cls} # NER_MODEL: another token-cls fixture with goldens
GOLDEN=$MODEL/pipeline_golden.json
TOK=$(dirname "$NLPD")/tests/tool_tokenize


if ! command -v python3 > /dev/null 2>&1; then
    echo "skip: python3 is not installed"
    finish
fi
if [ ! -x "$NLPD" ]; then
    nok "nlpd binary" "$NLPD is missing (make)"
    finish
fi

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

conf() { # conf FILE AGGREGATION EXTRA...
    local f=$1 a=$2
    shift 2
    printf 'pipeline = ( { stage = "ner"; model = "%s"; aggregation = "%s"; %s } );\n' "$ROOT/$MODEL" "$a" "$*" > "$f"
}

# Inputs: the golden texts, one JSON line each.
python3 - "$GOLDEN" "$W" << 'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/all.jsonl", "w") as f:
    for i, e in enumerate(g["examples"]):
        f.write(json.dumps({"id": str(i), "text": e["text"]}) + "\n")
EOF

compare() { # compare OUT.jsonl STRATEGY ONLY_UNTRUNCATED -> prints problems, exit 0 when none
    python3 - "$GOLDEN" "$1" "$2" "$3" << 'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
out = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
strat, only_untrunc = sys.argv[3], sys.argv[4] == "1"
bad, checked = [], 0
if len(out) != len(g["examples"]):
    print("%d output lines for %d inputs" % (len(out), len(g["examples"])))
    sys.exit(1)
key = "entity" if strat == "none" else "entity_group"
for ex, o in zip(g["examples"], out):
    if only_untrunc and ex["truncated"]:
        continue
    checked += 1
    gold, got = ex["entities"][strat], o.get("entities")
    if got is None:
        bad.append("%r: entities null (%s)" % (ex["text"][:30], o.get("error")))
        continue
    if len(gold) != len(got):
        bad.append("%r: %d entities, golden %d" % (ex["text"][:30], len(got), len(gold)))
        continue
    for i, (a, b) in enumerate(zip(gold, got)):
        fields = [key, "word", "start", "end"] + (["index"] if strat == "none" else [])
        diff = [f for f in fields if a.get(f) != b.get(f)]
        if abs(a["score"] - b.get("score", -9)) > 1e-4:
            diff.append("score")
        if diff:
            bad.append("%r entity %d: %s: got %s, golden %s" % (ex["text"][:30], i, diff, json.dumps(b, ensure_ascii=False), json.dumps(a, ensure_ascii=False)))
print("%d texts" % checked)
for b in bad[:10]:
    print(b)
sys.exit(1 if bad else 0)
EOF
}

for s in none simple first average max; do
    conf "$W/w.conf" "$s"
    conf "$W/t.conf" "$s" 'truncate = true;'
    for mode in w t; do
        desc="parity $s ($([ $mode = w ] && echo "texts that fit, default windowing" || echo "all texts, truncate = true"))"
        if ! "$NLPD" pipe -c "$W/$mode.conf" < "$W/all.jsonl" > "$W/out.$s.$mode" 2> "$W/err"; then
            nok "$desc" "nlpd pipe failed: $(cat "$W/err")"
            continue
        fi
        if r=$(compare "$W/out.$s.$mode" "$s" "$([ $mode = w ] && echo 1 || echo 0)"); then
            ok "$desc: $r"
        else
            nok "$desc" "$r"
        fi
    done
done

# --- windows: a long text -------------------------------------------------------------------------------------
python3 - "$GOLDEN" "$W" << 'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
sents = [e["text"] for e in g["examples"] if not e["truncated"]]
long_sents, n = [], 0
i = 0
while n < 10000:
    s = sents[i % len(sents)]
    long_sents.append(s)
    n += len(s) + 1
    i += 1
text = " ".join(long_sents)
json.dump(long_sents, open(sys.argv[2] + "/sents.json", "w"))
with open(sys.argv[2] + "/long.jsonl", "w") as f:
    f.write(json.dumps({"id": "long", "text": text}) + "\n")
with open(sys.argv[2] + "/sents.jsonl", "w") as f:
    for k, s in enumerate(long_sents):
        f.write(json.dumps({"id": str(k), "text": s}) + "\n")
with open(sys.argv[2] + "/tok.jsonl", "w") as f:
    f.write(json.dumps({"text": text, "max_length": 1 << 30}) + "\n")
EOF

if [ -x "$TOK" ] && "$TOK" "$MODEL" < "$W/tok.jsonl" > "$W/tok.out" 2> "$W/err"; then
    :
else
    nok "tokenize the long text" "$TOK: $(cat "$W/err" 2> /dev/null)"
fi

for stride in 0 16 31; do
    conf "$W/n.conf" none "ignore_labels = []; stride = $stride;"
    if ! "$NLPD" pipe -c "$W/n.conf" < "$W/long.jsonl" > "$W/long.none.$stride" 2> "$W/err"; then
        nok "windows stride $stride: every token once" "nlpd pipe failed: $(cat "$W/err")"
        continue
    fi
    if r=$(python3 - "$W/long.none.$stride" "$W/tok.out" << 'EOF'
import json, sys
o = json.loads(open(sys.argv[1]).readline())
tok = json.loads(open(sys.argv[2]).readline())
ents = o["entities"] or []
toks = [(i, s, e) for i, (s, e) in enumerate(tok["offsets"]) if not (s == 0 and e == 0 and tok["tokens"][i].startswith("["))]
got = [(x["index"], x["start"], x["end"]) for x in ents]
if len(toks) < 200:
    print("only %d tokens" % len(toks)); sys.exit(1)
if got != [tuple(t) for t in toks]:
    miss = set(map(tuple, toks)) - set(got)
    dup = len(got) - len(set(got))
    print("%d entities for %d tokens; %d missing, %d duplicated" % (len(got), len(toks), len(miss), dup)); sys.exit(1)
print("%d tokens, %d characters" % (len(toks), len(o["text"])))
EOF
    ); then ok "windows stride $stride: every token exactly once, in order: $r"; else nok "windows stride $stride: every token once" "$r"; fi
done

for s in simple first average max; do
    conf "$W/g.conf" "$s" "ignore_labels = [];"
    conf "$W/gs.conf" "$s"
    if ! "$NLPD" pipe -c "$W/g.conf" < "$W/long.jsonl" > "$W/long.$s" 2> "$W/err" ||
        ! "$NLPD" pipe -c "$W/gs.conf" < "$W/long.jsonl" > "$W/long.$s.ign" 2>> "$W/err" ||
        ! "$NLPD" pipe -c "$W/gs.conf" < "$W/sents.jsonl" > "$W/sents.$s" 2>> "$W/err"; then
        nok "windows $s" "nlpd pipe failed: $(cat "$W/err")"
        continue
    fi
    if r=$(python3 - "$W/long.$s" "$W/tok.out" "$W/long.$s.ign" "$W/sents.$s" "$W/sents.json" << 'EOF'
import json, sys
o = json.loads(open(sys.argv[1]).readline())
tok = json.loads(open(sys.argv[2]).readline())
text = o["text"]
ents = o["entities"]
spans = [(i, s, e) for i, (s, e) in enumerate(tok["offsets"]) if not (s == 0 and e == 0 and tok["tokens"][i].startswith("["))]
# Groups partition the tokens: ordered, non-overlapping, every token inside exactly one group.
prev = -1
for x in ents:
    if x["start"] < prev or x["end"] <= x["start"]:
        print("overlap or disorder at %s" % x); sys.exit(1)
    prev = x["end"]
k = 0
for (_, s, e) in spans:
    while k < len(ents) and ents[k]["end"] < e:
        k += 1
    if k == len(ents) or not (ents[k]["start"] <= s and e <= ents[k]["end"]):
        print("token %d-%d is in no entity" % (s, e)); sys.exit(1)
# The same text cut into sentences: how many entities (word, group, offsets shifted) agree.
ign = json.loads(open(sys.argv[3]).readline())["entities"]
sents = json.load(open(sys.argv[5]))
parts = [json.loads(l) for l in open(sys.argv[4])]
ref, off = set(), 0
for snt, p in zip(sents, parts):
    for x in p["entities"] or []:
        ref.add((x["entity_group"], x["word"], x["start"] + off, x["end"] + off))
    off += len(snt) + 1
got = set((x["entity_group"], x["word"], x["start"], x["end"]) for x in ign)
if len(got) != len(ign):
    print("duplicate entities"); sys.exit(1)
same = len(got & ref)
print("%d groups cover all %d tokens; %d entities, %d by sentence, %d identical (%.0f%%; the model sees other context)"
      % (len(ents), len(spans), len(ign), len(ref), same, 100.0 * same / max(1, len(ref))))
EOF
    ); then ok "windows $s: $r"; else nok "windows $s" "$r"; fi
done

# --- gazetteer ---------------------------------------------------------------------------------------------------
printf 'name\tcountry\tadmin1\nSão Paulo\tBR\t27\nZürich\tCH\t25\nNowhere Town\tXX\t00\n' > "$W/gaz.tsv"
conf "$W/gz.conf" simple "gazetteer = \"$W/gaz.tsv\"; gazetteer_label = \"CITY\"; ignore_labels = [\"O\", \"MISC\", \"LOC\", \"ORG\", \"PER\"];"
printf '%s\n' '{"id":"g","text":"From São Paulo to Zürich, not Zürichberg or são paulo."}' > "$W/gz.jsonl"
if "$NLPD" pipe -c "$W/gz.conf" < "$W/gz.jsonl" > "$W/gz.out" 2> "$W/err" && r=$(python3 - "$W/gz.out" << 'EOF'
import json, sys
o = json.loads(open(sys.argv[1]).readline())
got = [(x["entity_group"], x["word"], x["start"], x["end"], x["score"], x.get("source")) for x in o["entities"]]
want = [("CITY", "São Paulo", 5, 14, 1.0, "gazetteer"), ("CITY", "Zürich", 18, 24, 1.0, "gazetteer")]
if got != want:
    print("got %s" % got); sys.exit(1)
print("2 whole-word, case-sensitive matches")
EOF
); then ok "gazetteer: $r"; else nok "gazetteer" "${r:-$(cat "$W/err")}"; fi

finish
