#!/bin/bash
# The translate stage with one multilingual model (tests/fixtures/hf-tiny/nllb-mt and m2m100-mt; random weights,
# so the "translations" are nonsense but deterministic): langid -> translate through `nlpd pipe`. Each record's
# sentences equal `nlpd infer` with the source language lang.code maps to (de -> deu_Latn, fr -> fra_Latn) and
# the target language forced; records in the target language (also when target_lang is spelt "eng_Latn") are
# left alone; a language the model cannot take
# is left alone (unsupported_lang = skip) or dead-lettered with the reason (fail), or translated once lang_map
# maps it; a lang_map value or target_lang the model lacks is an `nlpd check` error; an M2M100 model too.
# usage: tests/models/test_translate_m2m_pipe.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=${1:-build/nlpd}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. tests/lib.sh
NLLB=tests/fixtures/hf-tiny/nllb-mt
M2M=tests/fixtures/hf-tiny/m2m100-mt
LID=models/lid.176.ftz
if [ ! -f "$LID" ]; then
    echo "skipped: run make models first ($LID)"
    echo "0 passed, 0 failed"
    exit 0
fi

conf() { # $1 file, $2 model, $3 extra translate options
    cat > "$1" << EOF
batch: { max_records = 16; max_wait_ms = 5; };
kernels: { threads = 1; };
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "translate"; model = "$2"; num_beams = 2; max_length = 12; $3 }
);
EOF
}

cat > "$T/in.jsonl" << 'EOF'
{"id": "de", "text": "Das ist ein sehr gutes Produkt. Ich bin wirklich zufrieden!"}
{"id": "en", "text": "This is a great product, I love it."}
{"id": "fr", "text": "Le service client était horrible et lent."}
{"id": "la", "text": "Gallia est omnis divisa in partes tres, quarum unam incolunt Belgae."}
EOF

# `nlpd infer` per sentence as a JSON list of texts; $1 model, $2 target code, stdin "src<TAB>text" lines
expect() {
    python3 -c '
import json, sys
for l in sys.stdin:
    src, text = l.rstrip("\n").split("\t")
    print(json.dumps({"text": text, "src_lang": src, "tgt_lang": sys.argv[1]}))' "$2" > "$T/inf.jsonl"
    timeout 60 "$NLPD" infer --model "$1" --num-beams 2 --max-length 12 < "$T/inf.jsonl" 2> /dev/null |
        python3 -c 'import json, sys; print(json.dumps([json.loads(l).get("text") for l in sys.stdin]))'
}

# $1 output file, $2 python expression over r (records by id) and w (expected texts), $3 expected JSON
check() {
    python3 -c '
import json, sys
r = {}
for l in open(sys.argv[1]):
    o = json.loads(l)
    r[o["id"]] = o
w = json.loads(sys.argv[3])
tr = lambda i: (r.get(i, {}).get("translation") or {})
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" "$3"
}

conf "$T/a.conf" "$NLLB" ''
if timeout 120 "$NLPD" pipe -c "$T/a.conf" < "$T/in.jsonl" > "$T/a.out" 2> "$T/a.err"; then
    ok "langid -> translate (NLLB) runs"
else
    nok "pipe" "$(tail -n 3 "$T/a.err")"
fi
want=$(printf 'deu_Latn\tDas ist ein sehr gutes Produkt.\ndeu_Latn\tIch bin wirklich zufrieden!\nfra_Latn\tLe service client était horrible et lent.\n' |
    expect "$NLLB" eng_Latn)
if check "$T/a.out" 'tr("de").get("text") == w[0] + " " + w[1] and tr("de").get("source_lang") == "de" and tr("de").get("target_lang") == "en" and tr("fr").get("text") == w[2]' "$want"; then
    ok "de / fr sentences as nlpd infer gives them with deu_Latn / fra_Latn -> eng_Latn"
else
    nok "stage output" "$(cat "$T/a.out") want $want"
fi
if check "$T/a.out" 'not tr("en") and not tr("la") and "error" not in r["la"]' '[]'; then
    ok "en (the target) and la (not in the model, unsupported_lang = skip) are left alone"
else
    nok "left alone" "$(cat "$T/a.out")"
fi

conf "$T/b.conf" "$NLLB" 'unsupported_lang = "fail";'
timeout 120 "$NLPD" pipe -c "$T/b.conf" < "$T/in.jsonl" > "$T/b.out" 2> "$T/b.err"
if grep -q '"error":"language \\"la\\" is not one the model can translate' "$T/b.out" &&
    [ "$(grep -c '"translation":{' "$T/b.out")" -eq 2 ]; then
    ok "unsupported_lang = fail dead-letters la with the reason, translates the rest"
else
    nok "unsupported_lang = fail" "$(cat "$T/b.out")"
fi

conf "$T/c.conf" "$NLLB" 'lang_map = (("la", "ita_Latn"));'
timeout 120 "$NLPD" pipe -c "$T/c.conf" < "$T/in.jsonl" > "$T/c.out" 2> "$T/c.err"
want=$(printf 'ita_Latn\tGallia est omnis divisa in partes tres, quarum unam incolunt Belgae.\n' | expect "$NLLB" eng_Latn)
if check "$T/c.out" 'tr("la").get("text") == w[0]' "$want"; then
    ok "lang_map la -> ita_Latn translates la"
else
    nok "lang_map" "$(grep '"la"' "$T/c.out") want $want"
fi

conf "$T/g.conf" "$NLLB" 'target_lang = "eng_Latn";'
timeout 120 "$NLPD" pipe -c "$T/g.conf" < "$T/in.jsonl" > "$T/g.out" 2> "$T/g.err"
if check "$T/g.out" 'not tr("en") and tr("de").get("text") and tr("de").get("target_lang") == "eng_Latn"' '[]'; then
    ok "target_lang in the model's spelling: en records (eng_Latn) are left alone, de translated"
else
    nok "target_lang eng_Latn" "$(cat "$T/g.out")"
fi

conf "$T/d.conf" "$NLLB" 'lang_map = (("la", "lat_Latn"));'
if "$NLPD" check -c "$T/d.conf" > "$T/d.txt" 2>&1; then
    nok "lang_map to a missing code" "nlpd check passed"
elif grep -q 'lang_map: "la" -> "lat_Latn".*has no language "lat_Latn"' "$T/d.txt"; then
    ok "a lang_map value the model lacks is a check error naming it"
else
    nok "lang_map check error" "$(cat "$T/d.txt")"
fi
conf "$T/e.conf" "$NLLB" 'target_lang = "xx";'
if ! "$NLPD" check -c "$T/e.conf" > "$T/e.txt" 2>&1 && grep -q 'target_lang "xx"' "$T/e.txt"; then
    ok "a target_lang the model lacks is a check error"
else
    nok "target_lang check error" "$(cat "$T/e.txt")"
fi
if "$NLPD" check -c "$T/a.conf" 2>&1 | grep -q "languages have no language in this model.*: an av "; then
    ok "nlpd check lists lid.176's languages the model cannot take"
else
    nok "check lists languages" "$("$NLPD" check -c "$T/a.conf" 2>&1)"
fi

conf "$T/f.conf" "$M2M" 'target_lang = "pt";'
timeout 120 "$NLPD" pipe -c "$T/f.conf" < "$T/in.jsonl" > "$T/f.out" 2> "$T/f.err"
want=$(printf 'en\tThis is a great product, I love it.\nfr\tLe service client était horrible et lent.\n' | expect "$M2M" pt)
if check "$T/f.out" 'tr("en").get("text") == w[0] and tr("fr").get("text") == w[1] and tr("en").get("target_lang") == "pt"' "$want"; then
    ok "an M2M100 model: en / fr -> pt as nlpd infer gives them"
else
    nok "M2M100 stage" "$(cat "$T/f.out" "$T/f.err" | tail -5) want $want"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
