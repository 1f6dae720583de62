#!/bin/bash
# Model management (issue 19): shadow models (agreement, outputs untouched), canary splits (share, stability,
# meta.models), drift metrics in a live scrape of `nlpd run`, `nlpd models`, and config errors. The expectations
# come from separate runs of each model alone, never from constants tuned to this machine.
# usage: tests/integration/test_models.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=1500
ROOT=$PWD
NLPD=$(realpath "${1:-build/nlpd}")
TOOL=$(dirname "$NLPD")/tests/tool_kafka
POL=$ROOT/models/amazon_review_polarity.ftz
FULL=$ROOT/models/amazon_review_full.ftz
LID=$ROOT/models/lid.176.ftz
if [ ! -f "$POL" ] || [ ! -f "$FULL" ] || [ ! -f "$LID" ]; then
    echo "skip: needs models/ (make models)"
    finish
fi
T=$(mktemp -d) || exit 2
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

# 2000 review-like records (fixed seed): mixed praise, complaints and plain statements, so both models see
# every kind of text and disagree on some.
python3 - "$T/in.jsonl" << 'PY'
import json, random, sys
r = random.Random(19)
good = ["great", "excellent", "love it", "works perfectly", "highly recommend", "fantastic value", "so happy"]
bad = ["terrible", "broke after a week", "waste of money", "very disappointed", "awful", "do not buy", "returned it"]
meh = ["it is okay", "average", "arrived on tuesday", "the box was blue", "not sure yet", "does what it says"]
things = ["this blender", "the headphones", "my new phone case", "this book", "the charger", "these shoes"]
with open(sys.argv[1], "w") as f:
    for i in range(2000):
        words = [r.choice(things)] + [r.choice(r.choice([good, bad, meh])) for _ in range(r.randint(1, 4))]
        f.write(json.dumps({"id": "r%d" % i, "text": " ".join(words) + r.choice([".", "!", ""])}) + "\n")
PY

FULL_LABELS='labels = (("__label__1", "negative"), ("__label__2", "negative"), ("__label__3", "negative"),
                       ("__label__4", "positive"), ("__label__5", "positive"));'
conf() { cat > "$T/$1.conf"; }
conf pol << EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; } );
EOF
conf full << EOF
pipeline = ( { stage = "sentiment"; model = "$FULL"; $FULL_LABELS } );
EOF
conf shadow_same << EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; shadow = { model = "$POL"; }; } );
EOF
conf shadow_full << EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; shadow = { model = "$FULL"; $FULL_LABELS }; } );
EOF
conf shadow_quarter << EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; shadow = { model = "$POL"; sample = 0.25; }; } );
EOF
conf canary << EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               canary = { model = "$FULL"; fraction = 0.25; key = "id"; $FULL_LABELS }; } );
EOF
# runpipe NAME: nlpd pipe on the 2000 records into $T/NAME.out / $T/NAME.err, bounded in time.
runpipe() {
    timeout 120 "$NLPD" pipe -c "$T/$1.conf" < "$T/in.jsonl" > "$T/$1.out" 2> "$T/$1.err"
}
for c in pol full shadow_same shadow_full shadow_quarter canary; do
    runpipe "$c" || nok "nlpd pipe ($c)" "exit $?: $(tail -n 3 "$T/$c.err")"
done
cp "$T/canary.out" "$T/canary1.out"
runpipe canary || nok "nlpd pipe (canary, second run)" "$(tail -n 3 "$T/canary.err")"

# strip NAME: the outputs without meta.latency_ms (a timing), every other byte kept
strip() { sed -E 's/"latency_ms":[0-9.e+-]+/"latency_ms":0/' "$T/$1.out"; }

# 1. A shadow equal to the primary: 100% agreement, outputs byte-identical to a run without it.
if cmp -s <(strip pol) <(strip shadow_same) && [ "$(wc -l < "$T/pol.out")" -eq 2000 ]; then
    ok "shadow = primary: the 2000 output records are byte-identical to a run without a shadow"
else
    nok "shadow = primary leaves outputs alone" "$(diff <(strip pol) <(strip shadow_same) | head -n 4)"
fi
if grep -q 'shadow sentiment: 2000 agree, 0 disagree, 0 skipped, 0 failed' "$T/shadow_same.err"; then
    ok "shadow = primary: 2000 agree, 0 disagree"
else
    nok "shadow = primary agreement" "$(grep shadow "$T/shadow_same.err")"
fi

# 2. A different shadow: the agreement the two models' own outputs predict, record by record.
expect=$(python3 - "$T/pol.out" "$T/full.out" << 'PY'
import json, sys
a = [json.loads(l)["sentiment"]["label"] for l in open(sys.argv[1])]
b = [json.loads(l)["sentiment"]["label"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 2000
same = sum(x == y for x, y in zip(a, b))
print(same, len(a) - same)
PY
)
read -r agree disagree <<< "$expect"
if [ -n "$agree" ] && [ "$agree" -gt 0 ] && [ "$disagree" -gt 0 ] &&
    grep -q "shadow sentiment: $agree agree, $disagree disagree, 0 skipped, 0 failed" "$T/shadow_full.err"; then
    ok "polarity vs full-star shadow: $agree agree, $disagree disagree, as the separate runs predict"
else
    nok "different shadow agreement" "expected '$expect', got: $(grep shadow "$T/shadow_full.err")"
fi
if cmp -s <(strip pol) <(strip shadow_full); then
    ok "a different shadow never changes the output records"
else
    nok "different shadow leaves outputs alone" "$(diff <(strip pol) <(strip shadow_full) | head -n 4)"
fi

# 2b. Hugging Face folders (tests/fixtures/hf-tiny): a NER shadow with the same model agrees on every entity set;
# a sentiment shadow of another architecture agrees where the two models' separate runs give the same label.
HF=$ROOT/tests/fixtures/hf-tiny
MAP='labels = (("contradiction", "negative"), ("entailment", "positive"));'
head -n 60 "$T/in.jsonl" > "$T/hf.jsonl"
conf hf_a << EOF
pipeline = ( { stage = "sentiment"; model = "$HF/bert-seq-cls"; } );
EOF
conf hf_b << EOF
pipeline = ( { stage = "sentiment"; model = "$HF/xlm-roberta-seq-cls"; $MAP } );
EOF
conf hf_shadow << EOF
pipeline = ( { stage = "ner"; model = "$HF/bert-token-cls"; shadow = { model = "$HF/bert-token-cls"; }; },
             { stage = "sentiment"; model = "$HF/bert-seq-cls"; shadow = { model = "$HF/xlm-roberta-seq-cls"; $MAP }; } );
EOF
for c in hf_a hf_b hf_shadow; do
    timeout 120 "$NLPD" pipe -c "$T/$c.conf" < "$T/hf.jsonl" > "$T/$c.out" 2> "$T/$c.err" ||
        nok "nlpd pipe ($c)" "$(tail -n 3 "$T/$c.err")"
done
expect=$(python3 - "$T/hf_a.out" "$T/hf_b.out" << 'PY'
import json, sys
a = [json.loads(l)["sentiment"]["label"] for l in open(sys.argv[1])]
b = [json.loads(l)["sentiment"]["label"] for l in open(sys.argv[2])]
same = sum(x == y for x, y in zip(a, b))
print(same, len(a) - same)
PY
)
read -r agree disagree <<< "$expect"
if grep -q "shadow ner: 60 agree, 0 disagree, 0 skipped, 0 failed" "$T/hf_shadow.err" && [ "${disagree:-0}" -gt 0 ] &&
    grep -q "shadow sentiment: $agree agree, $disagree disagree, 0 skipped, 0 failed" "$T/hf_shadow.err"; then
    ok "HF folders: NER shadow = primary agrees on all 60 entity sets; BERT vs XLM-R shadow: $agree agree, $disagree disagree, as the separate runs predict"
else
    nok "HF shadows" "expected sentiment '$expect', got: $(grep shadow "$T/hf_shadow.err")"
fi

# 2c. Translate: a shadow with the primary's model reads the input the primary read (not the translation that
# now feeds later stages), so every translation agrees, and the output is the one without a shadow.
conf tr << EOF
pipeline = ( { stage = "langid"; model = "$LID"; },
             { stage = "translate"; model = "$HF/marian-mt"; max_length = 12; when = "lang.code != 'en'"; } );
EOF
conf tr_shadow << EOF
pipeline = ( { stage = "langid"; model = "$LID"; },
             { stage = "translate"; model = "$HF/marian-mt"; max_length = 12; when = "lang.code != 'en'";
               shadow = { model = "$HF/marian-mt"; }; } );
EOF
cat > "$T/tr.jsonl" << 'EOF'
{"id": "de", "text": "Das ist ein sehr gutes Produkt. Ich bin wirklich zufrieden!"}
{"id": "fr", "text": "Le service client était horrible et lent."}
{"id": "es", "text": "El producto llegó roto y nadie me ayudó."}
{"id": "en", "text": "This is a great product, I love it."}
EOF
for c in tr tr_shadow; do
    timeout 120 "$NLPD" pipe -c "$T/$c.conf" < "$T/tr.jsonl" > "$T/$c.out" 2> "$T/$c.err" ||
        nok "nlpd pipe ($c)" "$(tail -n 3 "$T/$c.err")"
done
ntr=$(grep -c '"translation":{' "$T/tr.out")
if [ "$ntr" -ge 2 ] && grep -q "shadow translate: $ntr agree, 0 disagree, 0 skipped, 0 failed" "$T/tr_shadow.err" &&
    cmp -s <(strip tr) <(strip tr_shadow); then
    ok "translate shadow = primary: all $ntr translations agree, outputs unchanged"
else
    nok "translate shadow" "$ntr translated; $(grep shadow "$T/tr_shadow.err"); $(diff <(strip tr) <(strip tr_shadow) | head -n 4)"
fi

# A sampled shadow: a stable share of the records (by the hash of the text), the same on every run.
q=$(grep -o 'shadow sentiment: [0-9]* agree, 0 disagree, 0 skipped, 0 failed' "$T/shadow_quarter.err" | awk '{print $3}')
cp "$T/shadow_quarter.err" "$T/shadow_quarter1.err"
runpipe shadow_quarter
if [ -n "$q" ] && [ "$q" -ge 400 ] && [ "$q" -le 600 ] &&
    grep -q "shadow sentiment: $q agree, 0 disagree" "$T/shadow_quarter.err" && cmp -s <(strip pol) <(strip shadow_quarter); then
    ok "shadow sample = 0.25: $q of 2000 records compared (20-30%), the same count on a second run"
else
    nok "sampled shadow" "$(grep shadow "$T/shadow_quarter1.err" "$T/shadow_quarter.err")"
fi

# 3. A 25% canary: 20-30% of 2000 records, the same ones on a second run, meta.models naming the model that
# wrote each result, and each result the one that model gives alone.
if out=$(python3 - "$T/canary1.out" "$T/canary.out" "$T/pol.out" "$T/full.out" << 'PY' 2>&1
import json, sys
runs = [[json.loads(l) for l in open(p)] for p in sys.argv[1:5]]
c1, c2, pol, full = runs
assert len(c1) == len(c2) == 2000
def canaried(run):
    return {r["id"] for r in run if r["meta"]["models"]["sentiment"].startswith("amazon_review_full.ftz@sha256:")}
s1, s2 = canaried(c1), canaried(c2)
assert 400 <= len(s1) <= 600, ("canary share", len(s1))
assert s1 == s2, ("second run differs", len(s1 ^ s2))
# the documented split, implemented here independently: any node computes the same set
def fnv_fmix(salt, data):
    h, M = 0xcbf29ce484222325, 2**64 - 1
    for b in salt.encode() + b"\0" + data.encode():
        h = ((h ^ b) * 0x100000001b3) & M
    h ^= h >> 33; h = (h * 0xff51afd7ed558ccd) & M; h ^= h >> 33; h = (h * 0xc4ceb9fe1a85ec53) & M; h ^= h >> 33
    return h
assert s1 == {r["id"] for r in c1 if (fnv_fmix("sentiment", r["id"]) >> 11) / 2**53 < 0.25}, "not the documented hash"
for r, p, f in zip(c1, pol, full):
    m = r["meta"]["models"]["sentiment"]
    ref = f if r["id"] in s1 else p
    assert m == ref["meta"]["models"]["sentiment"], (r["id"], m)
    assert r["sentiment"] == ref["sentiment"], (r["id"], r["sentiment"], ref["sentiment"])
print(len(s1))
PY
); then
    ok "25% canary: $out of 2000 records (20-30%), the same on a second run, meta.models and results per model"
else
    nok "canary split" "$out"
fi

# 4. Config errors: FILE:LINE and a clear reason, exit 1.
conf bad1 << EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               shadow = { model = "$FULL"; nosuchkey = 1; }; } );
EOF
conf bad2 << EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               canary = { model = "$FULL"; }; } );
EOF
conf bad3 << EOF
pipeline = ( { stage = "sentiment"; model = "$POL"; shadow = "$FULL"; } );
EOF
conf bad4 << EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               shadow = { model = "$FULL"; }; } );
EOF
for b in bad1 bad2 bad3 bad4; do
    "$NLPD" check -c "$T/$b.conf" > "$T/$b.out" 2>&1
    echo "rc=$?" >> "$T/$b.out"
done
if grep -q "bad1.conf:[0-9]*:.*nosuchkey.*shadow" "$T/bad1.out" && grep -q "rc=1" "$T/bad1.out" &&
    grep -q "bad2.conf:[0-9]*:.*canary.*fraction" "$T/bad2.out" && grep -q "rc=1" "$T/bad2.out" &&
    grep -q "bad3.conf:[0-9]*:.*shadow must be a group" "$T/bad3.out" && grep -q "rc=1" "$T/bad3.out" &&
    grep -q "bad4.conf:2:.*shadow: its labels (1, 2, 3, 4, 5) are not the primary's (negative, positive)" \
        "$T/bad4.out" && grep -q "rc=1" "$T/bad4.out"; then
    ok "nlpd check: unknown shadow key, canary without fraction, shadow not a group, shadow labels not the primary's: FILE:LINE errors, exit 1"
else
    nok "config errors" "$(cat "$T/bad1.out" "$T/bad2.out" "$T/bad3.out")"
fi

# 5. nlpd models: every model with its digest, role and architecture.
"$NLPD" models -c "$T/canary.conf" > "$T/models.out" 2>&1
pdig=$(sha256sum "$POL" | cut -d' ' -f1)
fdig=$(sha256sum "$FULL" | cut -d' ' -f1)
if grep -q "^sentiment (primary)" "$T/models.out" && grep -q "^sentiment (canary)" "$T/models.out" &&
    grep -q "amazon_review_polarity.ftz@sha256:$pdig" "$T/models.out" &&
    grep -q "amazon_review_full.ftz@sha256:$fdig" "$T/models.out" &&
    [ "$(grep -c 'architecture: fasttext' "$T/models.out")" -eq 2 ]; then
    ok "nlpd models lists the primary and the canary with their sha256 and architecture"
else
    nok "nlpd models" "$(cat "$T/models.out")"
fi

# 6. Drift families in a live scrape of `nlpd run`: label counts, score and input-length histograms,
# low-confidence counts and shadow agreement equal what the records' outputs say.
if [ ! -x "$TOOL" ]; then
    nok "tool_kafka" "$TOOL missing"
    finish
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
N=300
head -n $N "$T/in.jsonl" > "$T/live.jsonl"
cat > "$T/run.conf" << EOF
kafka: { brokers = "embedded"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq"; };
output: { format = "json"; };
metrics: { listen = "127.0.0.1:$PORT"; };
cache: { backend = "none"; };
pipeline = ( { stage = "langid"; model = "$LID"; low_confidence = 0.9; shadow = { model = "$LID"; }; },
             { stage = "sentiment"; model = "$POL"; shadow = { model = "$FULL"; $FULL_LABELS }; } );
EOF
sed 's/cache: .*//; s/kafka: .*//; s/metrics: .*//; s/output: .*//' "$T/run.conf" > "$T/live.conf"
timeout 120 "$NLPD" pipe -c "$T/live.conf" < "$T/live.jsonl" > "$T/live.out" 2> "$T/live.err"
"$NLPD" run -c "$T/run.conf" > "$T/nlpd.log" 2>&1 &
pid=$!
bs=
for _ in $(seq 100); do
    bs=$(grep -o 'embedded broker at [0-9.]*:[0-9]*' "$T/nlpd.log" | awk '{print $4}')
    [ -n "$bs" ] && grep -q 'assigned' "$T/nlpd.log" && break
    sleep 0.2
done
if [ -z "$bs" ]; then
    nok "daemon starts" "$(tail -n 3 "$T/nlpd.log")"
    finish
fi
timeout 60 "$TOOL" produce "$bs" in < "$T/live.jsonl" > /dev/null 2>&1
for _ in $(seq 150); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m.txt"
    grep -q "^nlpd_records_produced_total $N$" "$T/m.txt" && break
    sleep 0.2
done
if out=$(python3 - "$T/m.txt" "$T/live.out" "$N" << 'PY' 2>&1
import collections, json, re, sys
m = {}
for ln in open(sys.argv[1]):
    x = re.fullmatch(r'([a-z_]+)(\{(.*)\})? (\S+)\n', ln)
    if x:
        m[(x.group(1), x.group(3) or "")] = float(x.group(4))
recs = [json.loads(l) for l in open(sys.argv[2])]
n = int(sys.argv[3])
assert len(recs) == n
assert m[("nlpd_records_produced_total", "")] == n, m.get(("nlpd_records_produced_total", ""))
for stage, field, key, low in (("langid", "lang", "code", 0.9), ("sentiment", "sentiment", "label", 0.5)):
    want = collections.Counter(r[field][key] for r in recs)
    got = {k[1].split('label="')[1][:-1]: v for k, v in m.items()
           if k[0] == "nlpd_stage_results_total" and k[1].startswith('stage="%s",' % stage)}
    assert got == dict(want), (stage, got, dict(want))
    assert m[("nlpd_stage_score_count", 'stage="%s"' % stage)] == n
    assert m[("nlpd_stage_input_bytes_count", 'stage="%s"' % stage)] == n
    assert m[("nlpd_stage_input_bytes_sum", 'stage="%s"' % stage)] == sum(len(r["text"].encode()) for r in recs)
    lows = sum(r[field]["score"] < low for r in recs)
    assert m[("nlpd_stage_low_confidence_total", 'stage="%s"' % stage)] == lows, (stage, lows)
    assert 0 < m[("nlpd_stage_scored_total", 'stage="%s"' % stage)] == n
pipe_line = [l for l in open(sys.argv[2].replace(".out", ".err")) if "shadow sentiment:" in l][0]
agree, disagree = map(int, re.search(r"(\d+) agree, (\d+) disagree", pipe_line).groups())
assert m[("nlpd_shadow_predictions_total", 'stage="sentiment",agreement="agree"')] == agree
assert m[("nlpd_shadow_predictions_total", 'stage="sentiment",agreement="disagree"')] == disagree
assert agree + disagree == n and disagree > 0
assert m[("nlpd_shadow_score_diff_count", 'stage="sentiment"')] == n
assert ("nlpd_shadow_batch_seconds_count", 'stage="sentiment"') in m
assert any(k[0] == "nlpd_model_info" and 'role="shadow"' in k[1] for k in m)
assert m[("nlpd_shadow_predictions_total", 'stage="langid",agreement="agree"')] == n  # the same model: all agree
assert m[("nlpd_shadow_predictions_total", 'stage="langid",agreement="disagree"')] == 0
print("%d records, %d languages, %d/%d shadow agreement" % (n, len({r["lang"]["code"] for r in recs}), agree, n))
PY
); then
    ok "live scrape: nlpd_stage_results_total, nlpd_stage_score, nlpd_stage_input_bytes, low-confidence and shadow counts match the outputs ($out)"
else
    nok "live drift metrics" "$out"
fi
# 6b. SIGHUP: the sentiment shadow becomes a canary, live. Counters start afresh with the new pipeline; the canary
# serves the records the documented hash of their id picks, and nlpd_model_info names it.
cp "$T/run.conf" "$T/run_shadow.conf"
cat > "$T/run.conf" << EOF
kafka: { brokers = "embedded"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq"; };
output: { format = "json"; };
metrics: { listen = "127.0.0.1:$PORT"; };
cache: { backend = "none"; };
pipeline = ( { stage = "langid"; model = "$LID"; low_confidence = 0.9; shadow = { model = "$LID"; }; },
             { stage = "sentiment"; model = "$POL";
               canary = { model = "$FULL"; fraction = 0.25; key = "id"; $FULL_LABELS }; } );
EOF
kill -HUP "$pid"
for _ in $(seq 100); do
    grep -q 'reload: applied' "$T/nlpd.log" && break
    sleep 0.2
done
sed -n "$((N + 1)),$((N + 200))p" "$T/in.jsonl" > "$T/live2.jsonl"
timeout 60 "$TOOL" produce "$bs" in < "$T/live2.jsonl" > /dev/null 2>&1
for _ in $(seq 150); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m3.txt"
    grep -q "^nlpd_records_produced_total $((N + 200))$" "$T/m3.txt" && break
    sleep 0.2
done
if out=$(python3 - "$T/m3.txt" "$T/live2.jsonl" << 'PY' 2>&1
import json, re, sys
m = {}
for ln in open(sys.argv[1]):
    x = re.fullmatch(r'([a-z_]+)(\{(.*)\})? (\S+)\n', ln)
    if x:
        m[(x.group(1), x.group(3) or "")] = float(x.group(4))
ids = [json.loads(l)["id"] for l in open(sys.argv[2])]
def fnv_fmix(salt, data):
    h, M = 0xcbf29ce484222325, 2**64 - 1
    for b in salt.encode() + b"\0" + data.encode():
        h = ((h ^ b) * 0x100000001b3) & M
    h ^= h >> 33; h = (h * 0xff51afd7ed558ccd) & M; h ^= h >> 33; h = (h * 0xc4ceb9fe1a85ec53) & M; h ^= h >> 33
    return h
want = sum((fnv_fmix("sentiment", i) >> 11) / 2**53 < 0.25 for i in ids)
c = {k[1].split('role="')[1].split('"')[0]: v for k, v in m.items() if k[0] == "nlpd_canary_records_total"}
assert c == {"primary": len(ids) - want, "canary": want}, (c, want)
assert any(k[0] == "nlpd_model_info" and 'stage="sentiment"' in k[1] and 'role="canary"' in k[1] and
           "amazon_review_full.ftz@sha256:" in k[1] for k in m), "model_info"
assert not any(k[0] == "nlpd_shadow_predictions_total" and 'stage="sentiment"' in k[1] for k in m), "old shadow"
assert m[("nlpd_shadow_predictions_total", 'stage="langid",agreement="agree"')] == len(ids)
print("%d of %d records to the canary" % (want, len(ids)))
PY
); then
    ok "SIGHUP turns the shadow into a 25% canary live: $out, as the documented hash says; model_info role=canary"
else
    nok "reload shadow -> canary" "$out"
fi
kill -TERM "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
pid=

# 7. Backpressure: a slow pipeline (NLPD_TEST_BATCH_DELAY_MS) and a small flow.max_inflight pause the input;
# while it is paused the shadow is skipped first, and every sampled record is counted once: compared or skipped.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s/127.0.0.1:[0-9]*/127.0.0.1:$PORT/; s/^cache: .*/&\nflow: { max_inflight = 20; };\nbatch: { max_records = 10; };/" \
    "$T/run_shadow.conf" > "$T/slow.conf"
NLPD_TEST_BATCH_DELAY_MS=100 "$NLPD" run -c "$T/slow.conf" > "$T/slow.log" 2>&1 &
pid=$!
bs=
for _ in $(seq 100); do
    bs=$(grep -o 'embedded broker at [0-9.]*:[0-9]*' "$T/slow.log" | awk '{print $4}')
    [ -n "$bs" ] && grep -q 'assigned' "$T/slow.log" && break
    sleep 0.2
done
N=200
head -n $N "$T/in.jsonl" > "$T/slow.jsonl"
[ -n "$bs" ] && timeout 60 "$TOOL" produce "$bs" in < "$T/slow.jsonl" > /dev/null 2>&1
for _ in $(seq 300); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m2.txt"
    grep -q "^nlpd_records_produced_total $N$" "$T/m2.txt" && break
    sleep 0.2
done
if out=$(python3 - "$T/m2.txt" "$N" << 'PY' 2>&1
import re, sys
m = {}
for ln in open(sys.argv[1]):
    x = re.fullmatch(r'([a-z_]+)(\{(.*)\})? (\S+)\n', ln)
    if x:
        m[(x.group(1), x.group(3) or "")] = float(x.group(4))
n = int(sys.argv[2])
assert m[("nlpd_records_produced_total", "")] == n
g = lambda a: m[("nlpd_shadow_predictions_total", 'stage="sentiment",agreement="%s"' % a)]
skipped = m[("nlpd_shadow_skipped_total", 'stage="sentiment",reason="backpressure"')]
assert sum(v for k, v in m.items() if k[0] == "nlpd_input_pauses_total") > 0, "the input never paused"
assert skipped > 0, "nothing skipped"
assert g("agree") + g("disagree") + skipped == n, (g("agree"), g("disagree"), skipped)
print("%d skipped, %d compared" % (skipped, g("agree") + g("disagree")))
PY
); then
    ok "backpressure: the shadow is skipped while the input is paused, and counted ($out of $N)"
else
    nok "shadow under backpressure" "$out"
fi
kill -TERM "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
pid=
finish

