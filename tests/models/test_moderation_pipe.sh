#!/bin/bash
# The moderation stage through `nlpd pipe`: model scores against softmax/sigmoid of `nlpd infer` logits (within
# what float32 summation order allows),
# a multi-label copy of the bert-seq-cls fixture, a DeBERTa-v3 folder, label->category maps (max per category), thresholds, the word
# lists (models/lexicons) keyed to lang.code (a language without a list: lexicon_fallback; per-language allowlists),
# both layers together, config errors.
# Usage: tests/models/test_moderation_pipe.sh [NLPD_BINARY]. Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=1500
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
FIX=$ROOT/tests/fixtures/hf-tiny/bert-seq-cls
LEX=$ROOT/models/lexicons
LID=$ROOT/models/lid.176.ftz

[ -x "$NLPD" ] || { nok binary "$NLPD not found (run make)"; finish; }
command -v python3 > /dev/null || { nok python3 "python3 not found"; finish; }
[ -d "$LEX" ] || sh scripts/fetch-lexicons.sh > /dev/null 2>&1
[ -d "$LEX" ] || { nok lexicons "models/lexicons missing (run make models)"; finish; }

T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

# multi-label copy of the fixture
cp -r "$FIX" "$T/ml"
python3 - "$T/ml/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["problem_type"] = "multi_label_classification"
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY

cat > "$T/texts.jsonl" <<'EOF'
{"id": "a", "text": "what the fuck is this"}
{"id": "b", "text": "Scunthorpe is a lovely town."}
{"id": "c", "text": "I really like this phone, it works great"}
{"id": "d", "text": "So eine Scheiße"}
{"id": "e", "text": "你他妈的是谁"}
EOF

"$NLPD" infer --model "$FIX" < "$T/texts.jsonl" > "$T/logits.jsonl" 2> "$T/infer.err" ||
    nok infer "$(cat "$T/infer.err")"

# check NAME CONF SPEC: runs pipe and checks the output with check.py SPEC
cat > "$T/check.py" <<'PY'
import json, math, sys
mode, logits_f, out_f = sys.argv[1], sys.argv[2], sys.argv[3]
labels = ["negative", "neutral", "positive"]
logits = [json.loads(l)["logits"] for l in open(logits_f)]
outs = [json.loads(l) for l in open(out_f)]
probs = []
def softmax(x):
    m = max(x); e = [math.exp(v - m) for v in x]; s = sum(e); return [v / s for v in e]
def sigmoid(x):
    return [1 / (1 + math.exp(-v)) for v in x]
errs = []
if len(outs) != len(logits):
    errs.append("%d outputs for %d inputs" % (len(outs), len(logits)))
for i, (lg, o) in enumerate(zip(logits, outs)):
    m = o.get("moderation")
    if not m:
        errs.append("line %d: no moderation: %s" % (i + 1, o)); continue
    p = sigmoid(lg) if mode.startswith("sigmoid") else softmax(lg)
    # pipe and infer batch the texts differently, so their float32 logits differ by summation order only:
    # within eps = 1e-4 + 1e-4 |logit| (the engine's parity bar). Softmax moves a probability by at most eps / 2,
    # sigmoid by eps / 4.
    eps = 1e-4 + 1e-4 * max(abs(v) for v in lg)
    tol = eps / 4 if mode.startswith("sigmoid") else eps / 2
    if mode in ("softmax", "sigmoid"):
        for lab, v in zip(labels, p):
            got = m["category_scores"].get(lab)
            if got is None or abs(got - v) > tol:
                errs.append("line %d %s: %r vs %.7f" % (i + 1, lab, got, v))
            if m["categories"].get(lab) != (v >= 0.5) or m["category_labels"].get(lab) != lab:
                errs.append("line %d %s: flag/label %r %r" % (i + 1, lab, m["categories"].get(lab), m["category_labels"].get(lab)))
        if m["flagged"] != any(v >= 0.5 for v in p):
            errs.append("line %d: flagged %r" % (i + 1, m["flagged"]))
    if mode == "sigmoid-mapped":  # negative+neutral -> harassment (threshold 0.6), positive -> kind (0.5)
        h = max(p[0], p[1]); lab = labels[0] if p[0] >= p[1] else labels[1]
        if abs(m["category_scores"]["harassment"] - h) > tol or m["category_labels"]["harassment"] != lab:
            errs.append("line %d harassment %r vs %.7f %s" % (i + 1, m["category_scores"]["harassment"], h, lab))
        if m["categories"]["harassment"] != (h >= 0.6) or m["categories"]["kind"] != (p[2] >= 0.5):
            errs.append("line %d thresholds: %r" % (i + 1, m["categories"]))
        prof = o["id"] in ("a", "d", "e")
        if m["categories"].get("profanity") != prof or m["category_scores"].get("profanity") != (1 if prof else 0):
            errs.append("line %d profanity: %r" % (i + 1, m))
        if m["flagged"] != (prof or h >= 0.6 or p[2] >= 0.5):
            errs.append("line %d flagged %r" % (i + 1, m["flagged"]))
print("\n".join(errs))
sys.exit(1 if errs else 0)
PY

run() { # run NAME MODE [CONF]: pipe with $T/CONF.conf (default NAME), then check.py MODE
    c=${3:-$1}
    if ! "$NLPD" pipe -c "$T/$c.conf" < "$T/texts.jsonl" > "$T/$c.out" 2> "$T/$c.err"; then
        nok "$1" "pipe failed: $(cat "$T/$c.err")"
        return
    fi
    if r=$(python3 "$T/check.py" "$2" "$T/logits.jsonl" "$T/$c.out" 2>&1); then ok "$1"; else nok "$1" "$r"; fi
}

cat > "$T/softmax.conf" <<EOF
pipeline = ( { stage = "moderation"; model = "$FIX"; } );
EOF
run softmax softmax

cat > "$T/sigmoid.conf" <<EOF
pipeline = ( { stage = "moderation"; model = "$T/ml"; } );
EOF
run sigmoid sigmoid

cat > "$T/sigmoid_opt.conf" <<EOF
pipeline = ( { stage = "moderation"; model = "$FIX"; multi_label = true; } );
EOF
run sigmoid_option sigmoid sigmoid_opt

cat > "$T/both.conf" <<EOF
batch: { max_records = 4; };
pipeline = ( { stage = "moderation"; model = "$T/ml"; lexicon = "$LEX";
               categories = (("negative", "harassment"), ("neutral", "harassment"), ("positive", "kind"));
               thresholds = (("harassment", "0.6")); } );
EOF
run both_layers sigmoid-mapped both

# A DeBERTa-v3 folder is a model like any other: scores = softmax of its `nlpd infer` logits, its own labels.
DEB=$ROOT/tests/fixtures/hf-tiny/deberta-v2-seq-cls
echo "pipeline = ( { stage = \"moderation\"; model = \"$DEB\"; } );" > "$T/deberta.conf"
if "$NLPD" infer --model "$DEB" < "$T/texts.jsonl" > "$T/deb_logits.jsonl" 2> "$T/deb.err" &&
    "$NLPD" pipe -c "$T/deberta.conf" < "$T/texts.jsonl" > "$T/deberta.out" 2>> "$T/deb.err" &&
    r=$(python3 - "$DEB/config.json" "$T/deb_logits.jsonl" "$T/deberta.out" 2>&1 <<'PY'
import json, math, sys
cfg = json.load(open(sys.argv[1]))
labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
logits = [json.loads(l)["logits"] for l in open(sys.argv[2])]
outs = [json.loads(l) for l in open(sys.argv[3])]
assert len(outs) == len(logits) == 5, (len(outs), len(logits))
for lg, o in zip(logits, outs):
    m = max(lg)
    p = [math.exp(x - m) for x in lg]
    p = [x / sum(p) for x in p]
    cats = o["moderation"]["category_scores"]
    for lab, pk in zip(labels, p):
        # same logits (same binary, batch of one vs batched: float32 summation order) -> within 1e-4
        assert abs(cats[lab] - pk) <= 1e-4, (lab, cats[lab], pk)
PY
    ); then ok deberta_softmax; else nok deberta_softmax "${r:-} $(cat "$T/deb.err")"; fi

# lexicon only, keyed to lang.code
if [ -f "$LID" ]; then
    cat > "$T/lex.conf" <<EOF
pipeline = ( { stage = "langid"; model = "$LID"; }, { stage = "moderation"; lexicon = "$LEX"; } );
EOF
    printf '%s\n' '{"id":"1","text":"what the fuck"}' '{"id":"2","text":"Un café con leche, por favor"}' \
        '{"id":"3","text":"Scunthorpe United lost again"}' '{"id":"4","text":"du bist ein Arschloch"}' \
        '{"id":"5","text":"that movie was total sh1t, f.u.c.k this"}' '{"id":"6","text":"我每天早上喝牛奶"}' > "$T/lex.in"
    if "$NLPD" pipe -c "$T/lex.conf" < "$T/lex.in" > "$T/lex.out" 2> "$T/lex.err"; then
        got=$(python3 -c '
import json, sys
print(" ".join("%s:%s:%s" % (o["id"], o["moderation"]["flagged"], o["moderation"]["category_labels"]["profanity"])
               for o in map(json.loads, open(sys.argv[1]))))' "$T/lex.out")
        want="1:True:lexicon 2:False:lexicon 3:False:lexicon 4:True:lexicon 5:True:lexicon 6:False:lexicon"
        [ "$got" = "$want" ] && ok lexicon_by_lang || nok lexicon_by_lang "got $got, want $want"
    else
        nok lexicon_by_lang "$(cat "$T/lex.err")"
    fi
fi

# a language without a list (Vietnamese "hộ" is the English list's "ho"): no lexicon result unless lexicon_fallback
# names lists; French "retard" is "late" (built-in), lexicon_allow_lang adds per-language words
if [ -f "$LID" ]; then
    printf '%s\n' '{"id":"vi","text":"Các hộ gia đình ở Hà Nội rất đông người"}' \
        '{"id":"fr","text":"Le train est arrivé en retard ce matin"}' '{"id":"fr2","text":"Quelle salope, celle-là"}' \
        '{"id":"en","text":"Do not call him a retard"}' > "$T/nolist.in"
    nolist() { # NAME EXTRA-KEYS WANT
        printf 'log: { level = "info"; };\npipeline = ( { stage = "langid"; model = "%s"; },\n  { stage = "moderation"; lexicon = "%s"; %s } );\n' \
            "$LID" "$LEX" "$2" > "$T/$1.conf"
        if "$NLPD" pipe -c "$T/$1.conf" < "$T/nolist.in" > "$T/$1.out" 2> "$T/$1.err"; then
            got=$(python3 -c '
import json, sys
print(" ".join("%s:%s:%s" % (o["id"], o["lang"]["code"], o["moderation"] and o["moderation"]["flagged"])
               for o in map(json.loads, open(sys.argv[1]))))' "$T/$1.out")
            [ "$got" = "$3" ] && ok "$1" "$got" || nok "$1" "got $got, want $3"
        else
            nok "$1" "$(cat "$T/$1.err")"
        fi
    }
    nolist lexicon_no_list "" "vi:vi:None fr:fr:False fr2:fr:True en:en:True"
    if grep -q "lexicon: 1 distinct texts in languages without a word list were not checked" "$T/lexicon_no_list.err"; then
        ok lexicon_no_list_counted
    else
        nok lexicon_no_list_counted "$(cat "$T/lexicon_no_list.err")"
    fi
    nolist lexicon_fallback 'lexicon_fallback = ["en"]; lexicon_allow_lang = (("fr", "salope"));' \
        "vi:vi:True fr:fr:False fr2:fr:False en:en:True"
    nolist lexicon_no_builtin_allow 'lexicon_builtin_allow = false;' "vi:vi:None fr:fr:True fr2:fr:True en:en:True"
fi

# config errors
cfgerr() { # NAME REGEX CONF: nlpd check -c $T/CONF.conf must fail with REGEX
    if "$NLPD" check -c "$T/$3.conf" > "$T/$3.cout" 2>&1; then
        nok "$1" "nlpd check accepted it"
    elif grep -Eq "$2" "$T/$3.cout"; then ok "$1"; else nok "$1" "$(cat "$T/$3.cout")"; fi
}
echo 'pipeline = ( { stage = "moderation"; } );' > "$T/e_none.conf"
cfgerr config_needs_model_or_lexicon "model.*lexicon" e_none
printf 'pipeline = ( { stage = "moderation"; model = "%s"; thresholds = (("x", "high")); } );\n' "$FIX" > "$T/e_thr.conf"
cfgerr config_bad_threshold "thresholds" e_thr
printf 'pipeline = ( { stage = "moderation"; model = "%s"; categories = (("toxic", "harassment")); } );\n' "$FIX" \
    > "$T/e_cat.conf"
cfgerr config_unknown_label "no label \"toxic\"" e_cat
printf 'pipeline = ( { stage = "moderation"; lexicon = "%s"; lexicon_languages = ["xx"]; } );\n' "$LEX" > "$T/e_lang.conf"
cfgerr config_unknown_language "xx" e_lang
printf 'pipeline = ( { stage = "moderation"; lexicon = "%s"; lexicon_fallback = ["vi"]; } );\n' "$LEX" > "$T/e_fb.conf"
cfgerr config_unknown_fallback 'fallback language "vi"' e_fb
printf 'pipeline = ( { stage = "moderation"; model = "%s"; lexicon_fallback = ["en"]; } );\n' "$FIX" > "$T/e_fb2.conf"
cfgerr config_fallback_needs_lexicon 'lexicon_fallback.*need a .lexicon' e_fb2
finish
