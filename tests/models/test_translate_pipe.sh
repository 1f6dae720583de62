#!/bin/bash
# The translate stage through `nlpd pipe` on the Marian fixture (random weights: the "translations" are
# nonsense, but deterministic, so they can be checked against `nlpd infer`): langid -> translate -> sentiment;
# translation.{text, source_lang, target_lang}; records in the target language and records of a language
# without a model are left alone; long texts are split into sentences, translated in one batch and joined;
# later stages read the translation (or the original with downstream = "original"); the result cache gives
# the same record on a hit; configuration errors are FILE:LINE.
# usage: tests/models/test_translate_pipe.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MT=tests/fixtures/hf-tiny/marian-mt
LID=models/lid.176.ftz
SENT=models/amazon_review_polarity.ftz
if [ ! -f "$LID" ] || [ ! -f "$SENT" ]; then
    echo "skipped: run make models first ($LID, $SENT)"
    echo "0 passed, 0 failed"
    exit 0
fi

conf() { # $1 file, $2 extra translate options, $3 batch size
    cat > "$1" << EOF
batch: { max_records = ${3:-16}; max_wait_ms = 5; };
kernels: { threads = 1; };
cache: { backend = "memory"; };
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "translate"; model = "$MT"; num_beams = 2; max_length = 12; $2 },
  { stage = "sentiment"; model = "$SENT"; }
);
EOF
}

cat > "$T/in.jsonl" << 'EOF'
{"id": "de", "text": "Das ist ein sehr gutes Produkt. Ich bin wirklich zufrieden!"}
{"id": "en", "text": "This is a great product, I love it."}
{"id": "fr", "text": "Le service client était horrible et lent."}
{"id": "de-lines", "text": "Erste Zeile ohne Punkt\nZweite Zeile auch"}
{"id": "de2", "text": "Das ist ein sehr gutes Produkt. Ich bin wirklich zufrieden!"}
EOF

conf "$T/a.conf" ''
if "$NLPD" pipe -c "$T/a.conf" < "$T/in.jsonl" > "$T/a.out" 2> "$T/a.err"; then
    ok "langid -> translate -> sentiment runs"
else
    nok "pipe" "$(tail -n 3 "$T/a.err")"
fi

# the stage's sentences must be what `nlpd infer` gives for each sentence alone
printf '%s\n' '{"text": "Das ist ein sehr gutes Produkt."}' '{"text": "Ich bin wirklich zufrieden!"}' \
    '{"text": "Le service client était horrible et lent."}' '{"text": "Erste Zeile ohne Punkt"}' \
    '{"text": "Zweite Zeile auch"}' > "$T/sent.jsonl"
"$NLPD" infer --model "$MT" --num-beams 2 --max-length 12 < "$T/sent.jsonl" > "$T/infer.out" 2> /dev/null

if msg=$(python3 - "$T/a.out" "$T/infer.out" 2>&1 << 'PY'
import json, sys
out = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
inf = [json.loads(l)["text"] for l in open(sys.argv[2])]
de, en, fr, dl = out["de"], out["en"], out["fr"], out["de-lines"]
assert en["translation"] is None and en["lang"]["code"] == "en", en
assert "translate" not in en["meta"]["models"], "meta.models names only stages that wrote a result"
for r in (de, fr, dl):
    t = r["translation"]
    assert t and t["target_lang"] == "en" and t["source_lang"] == r["lang"]["code"], r
    assert "translate" in r["meta"]["models"], r["meta"]
    assert r["sentiment"] is not None, r
assert de["text"].startswith("Das ist"), "the output's text stays the input text"
assert de["translation"]["text"] == inf[0] + " " + inf[1], (de["translation"]["text"], inf[:2])
assert fr["translation"]["text"] == inf[2], (fr["translation"]["text"], inf[2])
assert dl["translation"]["text"] == inf[3] + "\n" + inf[4], (dl["translation"]["text"], inf[3:5])
assert out["de2"]["translation"] == de["translation"] and out["de2"]["sentiment"] == de["sentiment"]
print("3 translated, 1 left alone, sentences joined")
PY
); then ok "records: $msg"; else nok "records" "$msg"; fi

# later stages read the translation by default: sentiment of the record == sentiment of its translation alone
if msg=$(python3 - "$T/a.out" "$NLPD" "$SENT" "$T" 2>&1 << 'PY'
import json, subprocess, sys
out = [json.loads(l) for l in open(sys.argv[1])]
nlpd, sent, t = sys.argv[2], sys.argv[3], sys.argv[4]
open(t + "/s.conf", "w").write('pipeline = ( { stage = "sentiment"; model = "%s"; } );\n' % sent)
def sentiment(texts):
    inp = "".join(json.dumps({"id": str(i), "text": x}) + "\n" for i, x in enumerate(texts))
    res = subprocess.run([nlpd, "pipe", "-c", t + "/s.conf"], input=inp, capture_output=True, text=True, check=True)
    return [json.loads(l)["sentiment"] for l in res.stdout.splitlines()]
tr = [r for r in out if r["translation"]]
want = sentiment([r["translation"]["text"] for r in tr])
got = [r["sentiment"] for r in tr]
assert got == want, (got, want)
orig = sentiment([r["text"] for r in tr])
open(t + "/orig.json", "w").write(json.dumps(orig))
print("%d records" % len(tr))
PY
); then ok "downstream = translation: sentiment ran on the translation ($msg)"; else nok "downstream translation" "$msg"; fi

conf "$T/b.conf" 'downstream = "original";'
if "$NLPD" pipe -c "$T/b.conf" < "$T/in.jsonl" > "$T/b.out" 2> "$T/b.err" &&
    msg=$(python3 - "$T/b.out" "$T/orig.json" "$T/a.out" 2>&1 << 'PY'
import json, sys
out = [json.loads(l) for l in open(sys.argv[1])]
orig = json.load(open(sys.argv[2]))
a = [json.loads(l) for l in open(sys.argv[3])]
tr = [r for r in out if r["translation"]]
assert [r["sentiment"] for r in tr] == orig
assert [r["translation"] for r in out] == [r["translation"] for r in a]
print("ok")
PY
); then ok "downstream = original: later stages read the input text"; else nok "downstream original" "$msg"; fi

# one record per batch (one worker, so the duplicate's batch runs after the first one's): the duplicate comes
# from the cache, with the same translation and sentiment
conf "$T/c.conf" '' 1
if "$NLPD" pipe -c "$T/c.conf" < "$T/in.jsonl" > "$T/c.out" 2> "$T/c.err" &&
    grep -q "cache translate: 1 hits" "$T/c.err" && cmp -s <(python3 -c '
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); r["meta"].pop("latency_ms"); print(json.dumps(r, sort_keys=True))' "$T/c.out") <(python3 -c '
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); r["meta"].pop("latency_ms"); print(json.dumps(r, sort_keys=True))' "$T/a.out"); then
    ok "cache hit gives the same records (translation and what later stages read)"
else
    nok "cache" "$(grep cache "$T/c.err")"
fi

# per-language models: only German has one; French is left alone
conf "$T/d.conf" ''
sed -i "s|model = \"$MT\"; num_beams|models = ( (\"de\", \"$MT\") ); num_beams|" "$T/d.conf"
if "$NLPD" pipe -c "$T/d.conf" < "$T/in.jsonl" > "$T/d.out" 2> "$T/d.err" &&
    python3 -c '
import json, sys
out = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
assert out["de"]["translation"] and out["fr"]["translation"] is None, out["fr"]
assert "translate" not in out["fr"]["meta"]["models"], out["fr"]["meta"]' "$T/d.out"; then
    ok "models map: a language without a model is left alone"
else
    nok "models map" "$(tail -n 3 "$T/d.err")"
fi

# the daemon: conf/examples/translate.conf on the embedded Kafka broker (nlpd demo produces, runs, consumes)
if timeout 120 "$NLPD" demo -c conf/examples/translate.conf -i "$T/in.jsonl" > "$T/k.out" 2> "$T/k.err" &&
    msg=$(python3 - "$T/k.out" "$T/a.out" 2>&1 << 'PY'
import json, sys
k = {r["id"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))}
assert len(k) == 5, sorted(k)
for r in k.values():
    assert r["source"] and r["source"]["topic"] == "events", r
assert k["en"]["translation"] is None and all(k[i]["translation"] for i in ("de", "fr", "de-lines", "de2"))
assert k["de"]["translation"]["source_lang"] == "de" and k["de"]["sentiment"] is not None
print("5 records through Kafka")
PY
); then ok "daemon: $msg"; else nok "daemon (nlpd demo)" "${msg:-$(tail -n 3 "$T/k.err")}"; fi

# configuration errors
conf "$T/e.conf" 'target_token = ">>deu<<";'
if ! "$NLPD" check -c "$T/e.conf" > "$T/e.txt" 2>&1 && grep -q "no target-language token >>deu<<" "$T/e.txt"; then
    ok "a target token the model does not have is a check error"
else
    nok "target_token" "$(cat "$T/e.txt")"
fi
conf "$T/f.conf" 'max_tokens = 4;'
if ! "$NLPD" check -c "$T/f.conf" > "$T/f.txt" 2>&1 && grep -q "f.conf:6:.*max_tokens" "$T/f.txt"; then
    ok "out-of-range option: FILE:LINE"
else
    nok "num_beams range" "$(cat "$T/f.txt")"
fi
mkdir -p "$T/broken" && cp "$MT"/*.json "$MT"/*.spm "$T/broken/" && head -c 5000 "$MT/model.safetensors" > "$T/broken/model.safetensors"
conf "$T/g.conf" ''
sed -i "s|model = \"$MT\"|model = \"$T/broken\"|" "$T/g.conf"
if ! "$NLPD" check -c "$T/g.conf" > "$T/g.txt" 2>&1 && grep -q "model.safetensors" "$T/g.txt"; then
    ok "a truncated model is a check error naming the file"
else
    nok "truncated model" "$(cat "$T/g.txt")"
fi

# the real OPUS-MT en-pt tokenizer files (a multi-target vocabulary of 54776 with >>por<< and >>pob<<) on a tiny
# random model of that vocabulary: ids as SOURCE.md verified them, the target token named or refused
TCB=../shared/models/translation/opus-mt-tc-big-en-pt-tokenizer
if [ -f "$TCB/vocab.json" ] && /usr/bin/python3 -c 'import numpy' 2> /dev/null; then
    mk=$T/tcb
    /usr/bin/python3 tests/models/make_marian.py --out "$mk" --vocab 54776 --d-model 32 --max-pos 128 > /dev/null &&
        cp "$TCB"/source.spm "$TCB"/target.spm "$TCB"/vocab.json "$TCB"/tokenizer_config.json "$mk"/ &&
        python3 - "$mk" << 'PY'
import json, sys
for f in ("config.json", "generation_config.json"):
    p = sys.argv[1] + "/" + f
    c = json.load(open(p))
    c.update(eos_token_id=44670, forced_eos_token_id=44670, bad_words_ids=[[54775]])
    json.dump(c, open(p, "w"))
PY
    echo '{"text": "The database host is experiencing issues."}' | "$NLPD" infer --model "$mk" --max-length 6 > "$T/tcb.out" 2>&1
    if grep -q '"input_ids": \[49850, 14362, 25579, 28398, 20565, 28512, 28, 44670\]' "$T/tcb.out"; then
        ok "real OPUS-MT vocabulary: the ids SOURCE.md verified"
    else
        nok "real OPUS-MT vocabulary" "$(head -c 300 "$T/tcb.out")"
    fi
    printf 'pipeline = ( { stage = "translate"; model = "%s"; target_lang = "pt"; max_length = 6; } );\n' "$mk" > "$T/tcb.conf"
    if ! "$NLPD" check -c "$T/tcb.conf" > "$T/tcb.txt" 2>&1 && grep -q "one of >>pob<< >>por<<" "$T/tcb.txt"; then
        ok "multi-target model: a missing target token lists the model's"
    else
        nok "multi-target error" "$(cat "$T/tcb.txt")"
    fi
    sed -i 's/max_length = 6;/max_length = 6; target_token = ">>por<<";/' "$T/tcb.conf"
    if echo '{"id": "1", "text": "The database host is down. Try later."}' | "$NLPD" pipe -c "$T/tcb.conf" \
        2> /dev/null | python3 -c '
import json, sys
r = json.loads(sys.stdin.readline())
t = r["translation"]
assert t and t["target_lang"] == "pt" and t["source_lang"] == "und" and t["text"], r'; then
        ok "multi-target model: translated with target_token >>por<<"
    else
        nok "multi-target translation" "no translation"
    fi
    sed -i 's/target_token = ">>por<<";/target_token = "none";/' "$T/tcb.conf"
    if "$NLPD" check -c "$T/tcb.conf" > /dev/null 2>&1; then
        ok "target_token = \"none\": no token required"
    else
        nok "target_token none" "$("$NLPD" check -c "$T/tcb.conf" 2>&1 | tail -1)"
    fi
else
    echo "skipped: the OPUS-MT en-pt tokenizer files ($TCB) or numpy are not here"
fi

finish
