#!/bin/bash
# End-to-end tests of the nlpd CLI (DESIGN.md §9-§11): `nlpd pipe` (bad lines, order, batching, dotted
# paths, `when`, the record's shape, a closed output), `nlpd check` (FILE:LINE errors), `nlpd demo`.
# Usage: tests/integration/test_pipe.sh [NLPD_BINARY] (default build/nlpd; run-tests.sh also runs it on
# build/san/nlpd). Prints `ok - name` / `not ok - name: why` per case, then `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=1500
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
LID=$ROOT/models/lid.176.ftz
POL=$ROOT/models/amazon_review_polarity.ftz


if [ ! -x "$NLPD" ]; then
    nok "binary" "$NLPD not found or not executable (run make)"
    finish
fi
if [ ! -f "$LID" ] || [ ! -f "$POL" ]; then
    nok "models" "models/lid.176.ftz or models/amazon_review_polarity.ftz missing (run make models)"
    finish
fi
command -v python3 > /dev/null || { nok "python3" "python3 not found"; finish; }

T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
# ASan: leaks count as failures (exit code), and a report is not lost.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# conf NAME: writes stdin to $T/NAME.conf
conf() { cat > "$T/$1.conf"; }

# runpipe CONF IN OUT ERR [TIMEOUT]: nlpd pipe, bounded in time; returns its exit status.
runpipe() {
    timeout "${5:-120}" "$NLPD" pipe -c "$1" < "$2" > "$3" 2> "$4"
}

# --- shared python helpers: the verifier of a pipe run against a per-line spec ---------------------------------------
cat > "$T/verify.py" <<'PY'
"""verify.py SPEC OUT: SPEC is a JSON list, one entry per input line:
  {"kind": "good", "id": ..., "text": ..., "sentiment": "set"|"null"|absent, "lang": CODE|absent}
  {"kind": "error", "re": REGEX (case-insensitive), "id": ...|absent}
Checks one output line per input line, in order, the error lines' "line", ids and texts."""
import json, re, sys

spec = json.load(open(sys.argv[1], encoding="utf-8"))
raw = open(sys.argv[2], "rb").read()
probs = []
if raw and not raw.endswith(b"\n"):
    probs.append("output does not end with a newline")
lines = raw.split(b"\n")
if lines and lines[-1] == b"":
    lines.pop()
if len(lines) != len(spec):
    probs.append("%d output lines for %d input lines" % (len(lines), len(spec)))
for i, (exp, line) in enumerate(zip(spec, lines), 1):
    try:
        o = json.loads(line.decode("utf-8"))
    except Exception as e:
        probs.append("line %d: not UTF-8 JSON (%s): %r" % (i, e, line[:200]))
        continue
    if not isinstance(o, dict):
        probs.append("line %d: not an object: %r" % (i, line[:200]))
        continue
    if exp["kind"] == "error":
        if "error" not in o:
            probs.append("line %d: expected an error line (/%s/), got %s" % (i, exp["re"], line[:300].decode("utf-8", "replace")))
            continue
        if not isinstance(o["error"], str) or not o["error"]:
            probs.append("line %d: \"error\" is not a non-empty string: %r" % (i, o["error"]))
        elif not re.search(exp["re"], o["error"], re.I):
            probs.append("line %d: reason %r does not match /%s/" % (i, o["error"], exp["re"]))
        if o.get("line") != i:
            probs.append("line %d: error line has \"line\": %r" % (i, o.get("line")))
        if "id" in exp and o.get("id") != exp["id"]:
            probs.append("line %d: error line has \"id\": %r, expected %r" % (i, o.get("id"), exp["id"]))
        continue
    if "error" in o:
        probs.append("line %d: expected an enriched record, got error %r" % (i, o["error"]))
        continue
    if "id" in exp and o.get("id") != exp["id"]:
        probs.append("line %d: id %r, expected %r" % (i, o.get("id"), exp["id"]))
    if "text" in exp and o.get("text") != exp["text"]:
        probs.append("line %d: text %r, expected %r" % (i, o.get("text"), exp["text"]))
    lang = o.get("lang")
    if not (isinstance(lang, dict) and isinstance(lang.get("code"), str) and lang["code"]
            and isinstance(lang.get("score"), (int, float))):
        probs.append("line %d: lang is %r" % (i, lang))
    elif "lang" in exp and lang["code"] != exp["lang"]:
        probs.append("line %d: lang.code %r, expected %r" % (i, lang["code"], exp["lang"]))
    s = o.get("sentiment", "absent")
    if exp.get("sentiment") == "set":
        if not (isinstance(s, dict) and s.get("label") in ("positive", "negative")
                and isinstance(s.get("score"), (int, float))):
            probs.append("line %d: sentiment is %r, expected {label, score}" % (i, s))
    elif exp.get("sentiment") == "null" and s is not None:
        probs.append("line %d: sentiment is %r, expected null" % (i, s))
if probs:
    print("; ".join(probs[:6]) + ("; ... %d problems" % len(probs) if len(probs) > 6 else ""))
    sys.exit(1)
PY

# verify CASE CONF SPEC IN [TIMEOUT]: runs the pipe and the verifier; exit 0 expected.
verify() {
    local name=$1 cfg=$2 spec=$3 in=$4 rc why
    runpipe "$cfg" "$in" "$T/$name.out" "$T/$name.err" "${5:-120}"
    rc=$?
    if [ $rc -ne 0 ]; then
        nok "$name" "nlpd pipe exited $rc: $(tail -n 5 "$T/$name.err")"
        return
    fi
    if why=$(python3 "$T/verify.py" "$spec" "$T/$name.out" 2>&1); then
        ok "$name"
    else
        nok "$name" "$why"
    fi
}

# ====================================================================================================================
# pipe: bad lines among good ones
# ====================================================================================================================
conf bad <<EOF
input:   { max_text_bytes = 64; };
batch:   { max_records = 4; max_wait_ms = 5; };
kernels: { threads = 2; };
pipeline = (
  { stage = "langid";    model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = "lang.code == 'en'"; }
);
EOF
python3 - "$T/bad.in" "$T/bad.spec" <<'PY'
import json, sys
rows = []   # (bytes without newline, spec)
def good(i, text, sent="set", eol=b"\n"):
    rows.append((json.dumps({"id": i, "text": text}).encode(), {"kind": "good", "id": i, "text": text,
                 "sentiment": sent}, eol))
def bad(raw, rx, id=None, eol=b"\n"):
    s = {"kind": "error", "re": rx}
    if id is not None:
        s["id"] = id
    rows.append((raw if isinstance(raw, bytes) else raw.encode(), s, eol))
good("g1", "This phone is great and I love it.")
bad(b'{"id":"b2","text":"truncated', r"invalid JSON")
good("g3", "Der Akku ist leider sehr schlecht.", "null")
bad(b"[1,2,3]", r"object")
bad(b'"just a string"', r"object|invalid JSON")
bad(b'{"id":"b6","body":"no text here"}', r"missing.*text|text.*missing", "b6")
bad(b'{"id":"b7","text":42}', r"text.*not a string|string", "b7")
bad(b'{"id":"b8","text":null}', r"text.*not a string|string", "b8")
bad(b'{"id":"b9","text":""}', r"empty", "b9")
bad(b'{"id":"b10","text":" \\t\\n  "}', r"empty|whitespace", "b10")
bad(b'{"id":"b11","text":"caf\xff au lait"}', r"UTF-?8")
bad(json.dumps({"id": "b12", "text": "x" * 65}).encode(), r"too long|max_text_bytes", "b12")
bad(b'{"id":"b13","text":"a\\u0000b"}', r"NUL|\\u0000")
good("g14", "Another good line, with a CRLF ending.", eol=b"\r\n")
bad(b"", r"empty|invalid JSON|no JSON")
bad(b"   ", r"empty|invalid JSON|no JSON")
bad(b'{"id":"b17","text":"\\ud800"}', r"invalid JSON|Unicode|UTF|surrogate")
bad(b'{"id":"b18","text":"fine"} trailing', r"invalid JSON|end of")
bad(b'{"id":"b19","text":"one"}{"id":"b19b","text":"two"}', r"invalid JSON|end of")
bad(b"[" * 5000, r"invalid JSON|depth|nest")
bad(b'\x00{"id":"b21","text":"nul byte before"}', r"invalid|NUL")
good("g22", "\u00e9" * 32, "null")                       # exactly 64 bytes: accepted
bad(json.dumps({"id": "b23", "text": "\u00e9" * 32 + "a"}).encode(), r"too long|max_text_bytes", "b23")
good("g24", "The last line has no newline, but it counts.", eol=b"")
with open(sys.argv[1], "wb") as f:
    for raw, _, eol in rows:
        f.write(raw + eol)
json.dump([s for _, s, _ in rows], open(sys.argv[2], "w"))
PY
verify bad_lines "$T/bad.conf" "$T/bad.spec" "$T/bad.in"

# Bad lines only, and a single bad line without newline.
printf '\n\n\n' > "$T/blank.in"
printf '[{"kind":"error","re":"."},{"kind":"error","re":"."},{"kind":"error","re":"."}]' > "$T/blank.spec"
verify blank_lines_only "$T/bad.conf" "$T/blank.spec" "$T/blank.in"
printf '{"id":"x","text":"oops' > "$T/trunc.in"
printf '[{"kind":"error","re":"invalid JSON"}]' > "$T/trunc.spec"
verify truncated_last_line "$T/bad.conf" "$T/trunc.spec" "$T/trunc.in"

# Empty input: no output, exit 0.
: > "$T/empty.in"
if runpipe "$T/bad.conf" "$T/empty.in" "$T/empty.out" "$T/empty.err" 60 && [ ! -s "$T/empty.out" ]; then
    ok "empty_input"
else
    nok "empty_input" "rc or output unexpected: $(head -c 300 "$T/empty.out") $(tail -n 3 "$T/empty.err")"
fi

# ====================================================================================================================
# pipe: lines over the line cap (max_text_bytes * 6 + 1 MiB), read in many chunks
# ====================================================================================================================
conf long <<EOF
input:   { max_text_bytes = 16; };
batch:   { max_records = 2; };
kernels: { threads = 2; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
python3 - "$T/long.in" "$T/long.spec" <<'PY'
import json, sys
cap = 16 * 6 + (1 << 20)
def sized(i, total):       # a record line of exactly `total` bytes
    head = '{"id":"%s","text":"' % i
    return (head + "a" * (total - len(head) - 2) + '"}').encode()
rows = [
    (b'{"id":"1","text":"hello world"}\n', {"kind": "good", "id": "1", "text": "hello world"}),
    (sized(2, 1100000) + b"\n", {"kind": "error", "re": r"longer than|too long|line"}),
    (b'{"id":"3","text":"good morning"}\n', {"kind": "good", "id": "3", "text": "good morning"}),
    (sized(4, cap) + b"\n", {"kind": "error", "re": r"too long|max_text_bytes", "id": "4"}),  # at the cap: parsed
    (sized(5, cap + 1) + b"\n", {"kind": "error", "re": r"longer than|line"}),             # one byte over
    (b'{"id":"6","text":"thank you"}\n', {"kind": "good", "id": "6", "text": "thank you"}),
    (sized(7, 3 * 1000 * 1000) + b"\n", {"kind": "error", "re": r"longer than|line"}),
    (b'{"id":"8","text":"see you soon"}\r\n', {"kind": "good", "id": "8", "text": "see you soon"}),
    (b"\n", {"kind": "error", "re": "."}),
    (sized(10, 1200000), {"kind": "error", "re": r"longer than|line"}),                    # last, no newline
]
with open(sys.argv[1], "wb") as f:
    for raw, _ in rows:
        f.write(raw)
json.dump([s for _, s in rows], open(sys.argv[2], "w"))
PY
verify long_lines "$T/long.conf" "$T/long.spec" "$T/long.in"

# ====================================================================================================================
# pipe: order with 2 threads and batches of 3, with error lines mixed in
# ====================================================================================================================
conf order <<EOF
batch:   { max_records = 3; max_wait_ms = 1; };
kernels: { threads = 2; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
conf order4 <<EOF
batch:   { max_records = 1; max_wait_ms = 0; };
kernels: { threads = 4; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
conf order1 <<EOF
batch:   { max_records = 64; };
kernels: { threads = 1; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
python3 - "$T/order.in" "$T/order.spec" "$ROOT/build/corpus/multilingual.txt" <<'PY'
import json, os, sys
src = sys.argv[3]
texts = open(src, encoding="utf-8").read().splitlines() if os.path.exists(src) else []
if len(texts) < 100:
    texts = ["sentence number %d in a generated corpus" % i for i in range(3000)]
N = 2500
rows = []
for i in range(1, N + 1):
    if i % 97 == 0:
        rows.append((b'{"id":"%d","text":' % i, {"kind": "error", "re": "invalid JSON"}))
    elif i % 101 == 0:
        rows.append((('{"id":"%d","text":""}' % i).encode(), {"kind": "error", "re": "empty", "id": str(i)}))
    else:
        t = texts[i % len(texts)]
        rows.append((json.dumps({"id": str(i), "text": t}, ensure_ascii=False).encode(),
                     {"kind": "good", "id": str(i), "text": t}))
with open(sys.argv[1], "wb") as f:
    for raw, _ in rows:
        f.write(raw + b"\n")
json.dump([s for _, s in rows], open(sys.argv[2], "w"))
PY
verify order_threads2_batch3 "$T/order.conf" "$T/order.spec" "$T/order.in"
verify order_threads4_batch1 "$T/order4.conf" "$T/order.spec" "$T/order.in"
# Same results whatever the batching and threading.
if runpipe "$T/order1.conf" "$T/order.in" "$T/order1.out" "$T/order1.err" &&
    why=$(python3 - "$T/order_threads2_batch3.out" "$T/order1.out" 2>&1 <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
b = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
strip = lambda o: {k: v for k, v in o.items() if k != "meta"}
if len(a) != len(b):
    sys.exit("%d vs %d lines" % (len(a), len(b)))
diff = [i + 1 for i, (x, y) in enumerate(zip(a, b)) if strip(x) != strip(y)]
if diff:
    sys.exit("lines differ between threads=2/max_records=3 and threads=1/max_records=64: %s" % diff[:10])
PY
    ); then
    ok "deterministic_across_batching"
else
    nok "deterministic_across_batching" "${why:-threads=1 run failed: $(tail -n 3 "$T/order1.err")}"
fi

# ====================================================================================================================
# pipe: dotted paths for text_field and id_field; numeric ids become strings
# ====================================================================================================================
conf dotted <<EOF
input:   { text_field = "payload.body"; id_field = "meta.id"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
python3 - "$T/dotted.in" "$T/dotted.spec" <<'PY'
import json, sys
rows = [
    ({"meta": {"id": 42}, "payload": {"body": "The weather is nice today."}}, {"kind": "good", "id": "42", "text": "The weather is nice today."}),
    ({"meta": {"id": "abc"}, "payload": {"body": "Il fait beau aujourd'hui."}}, {"kind": "good", "id": "abc", "text": "Il fait beau aujourd'hui."}),
    ({"meta": {"id": -7}, "payload": {"body": "negative id"}}, {"kind": "good", "id": "-7", "text": "negative id"}),
    ({"meta": {"id": 12345678901234}, "payload": {"body": "big id"}}, {"kind": "good", "id": "12345678901234", "text": "big id"}),
    ({"meta": {"id": 1.5}, "payload": {"body": "real id"}}, {"kind": "good", "id": "1.5", "text": "real id"}),
    ({"payload": {"body": "no id at all"}}, {"kind": "good", "id": None, "text": "no id at all"}),
    ({"meta": {"id": "t1"}, "text": "top-level text is not the configured field"}, {"kind": "error", "re": r"missing.*payload\.body", "id": "t1"}),
    ({"meta": {"id": "t2"}, "payload": "not an object"}, {"kind": "error", "re": r"missing.*payload\.body|payload", "id": "t2"}),
    ({"meta": {"id": "t3"}, "payload": {"body": ["a"]}}, {"kind": "error", "re": r"not a string", "id": "t3"}),
    ({"meta": {"id": "t4"}, "payload.body": "a key with a dot in it"}, {"kind": "good", "id": "t4", "text": "a key with a dot in it"}),
    ({"meta": {"id": "t5"}, "payload": {"body": "deeper", "x": {"y": 1}}, "id": "top"}, {"kind": "good", "id": "t5", "text": "deeper"}),
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for o, _ in rows:
        f.write(json.dumps(o) + "\n")
json.dump([s for _, s in rows], open(sys.argv[2], "w"))
PY
verify dotted_paths "$T/dotted.conf" "$T/dotted.spec" "$T/dotted.in"

# ====================================================================================================================
# pipe: `when` conditions
# ====================================================================================================================
conf when_en <<EOF
pipeline = (
  { stage = "langid";    model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = "lang.code == 'en'"; }
);
EOF
conf when_not_en <<EOF
pipeline = (
  { stage = "langid";    model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = "lang.code != 'en'"; }
);
EOF
conf when_in <<EOF
pipeline = (
  { stage = "langid";    model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = "lang.code in ['de', 'fr'] && lang.score >= 0.5"; }
);
EOF
conf when_before <<EOF
pipeline = (
  { stage = "sentiment"; model = "$POL"; when = "lang.code == 'en'"; },
  { stage = "langid";    model = "$LID"; }
);
EOF
python3 - "$T" <<'PY'
import json, sys
t = sys.argv[1]
texts = [
    ("en", "I really love this product, it works perfectly."),
    ("de", "Ich habe dieses Produkt gekauft und bin sehr zufrieden damit."),
    ("fr", "Je suis très déçu par ce produit, il ne fonctionne pas."),
    ("en", "Terrible quality, it broke after two days."),
    ("es", "El producto llegó roto y el servicio fue muy malo."),
    ("ru", "Это очень хороший телефон, я доволен покупкой."),
    ("ja", "この製品はとても良いです。また買いたいです。"),
    ("en", "The battery life is amazing and the screen is bright."),
]
with open(t + "/when.in", "w", encoding="utf-8") as f:
    for i, (lang, s) in enumerate(texts, 1):
        f.write(json.dumps({"id": str(i), "text": s}, ensure_ascii=False) + "\n")
def spec(pred):
    return [{"kind": "good", "id": str(i), "lang": l, "sentiment": "set" if pred(l) else "null"}
            for i, (l, _) in enumerate(texts, 1)]
json.dump(spec(lambda l: l == "en"), open(t + "/when_en.spec", "w"))
json.dump(spec(lambda l: l != "en"), open(t + "/when_not_en.spec", "w"))
json.dump(spec(lambda l: l in ("de", "fr")), open(t + "/when_in.spec", "w"))
json.dump(spec(lambda l: False), open(t + "/when_before.spec", "w"))   # lang not set yet: condition false
PY
verify when_lang_en "$T/when_en.conf" "$T/when_en.spec" "$T/when.in"
verify when_lang_not_en "$T/when_not_en.conf" "$T/when_not_en.spec" "$T/when.in"
verify when_lang_in_and_score "$T/when_in.conf" "$T/when_in.spec" "$T/when.in"
verify when_field_not_set_yet "$T/when_before.conf" "$T/when_before.spec" "$T/when.in"

# ====================================================================================================================
# pipe: the enriched record's shape, and texts that round-trip exactly
# ====================================================================================================================
python3 - "$T/shape.in" <<'PY'
import json, sys
texts = [
    'He said "hello" and left.',
    "back\\slash \\n not a newline \\u0041",
    "tab\there, newline\nthere, cr\rand \x01\x02\x1f\x7f controls",
    "emoji 😀👍🏽 and flags 🇩🇪 and ZWJ 👩‍👩‍👧",
    "שלום עולם, זה טקסט בעברית",
    "مرحبا بالعالم، هذا نص عربي",
    "mixed ‮RLO‬ and \u200f marks",
    "line\u2028separator and paragraph\u2029separator",
    "combining e\u0301 and precomposed \u00e9, CJK 漢字, hangul 한국어",
    "/slashes/ and </script> and {\"json\": [1, 2]}",
    "  leading and trailing spaces  ",
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i, s in enumerate(texts, 1):
        f.write(json.dumps({"id": i, "text": s}, ensure_ascii=(i % 2 == 0)) + "\n")   # both escaped and raw UTF-8
    # a non-BMP character written as an escaped surrogate pair
    f.write('{"id": %d, "text": "surrogate pair \\ud83d\\ude00 here"}\n' % (len(texts) + 1))
PY
if runpipe "$T/bad.conf" "$T/shape.in" "$T/shape.out" "$T/shape.err"; then
    if why=$(python3 - "$T/shape.in" "$T/shape.out" 2>&1 <<'PY'
import json, math, sys
ins = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
raw = open(sys.argv[2], "rb").read()
outs = raw.split(b"\n")[:-1]
probs = []
if len(outs) != len(ins):
    sys.exit("%d output lines for %d inputs" % (len(outs), len(ins)))
keys = {"id", "text", "source", "lang", "translation", "sentiment", "entities", "moderation", "meta"}
for i, (src, line) in enumerate(zip(ins, outs), 1):
    try:
        o = json.loads(line.decode("utf-8"))
    except Exception as e:
        probs.append("line %d: invalid UTF-8/JSON: %s" % (i, e)); continue
    if set(o) != keys:
        probs.append("line %d: keys %s" % (i, sorted(o)))
        continue
    if o["id"] != str(src["id"]):
        probs.append("line %d: id %r" % (i, o["id"]))
    if o["text"] != src["text"]:
        probs.append("line %d: text %r != %r" % (i, o["text"], src["text"]))
    for k in ("source", "translation", "entities", "moderation"):
        if o[k] is not None:
            probs.append("line %d: %s is %r, expected null (stage not run)" % (i, k, o[k]))
    lang = o["lang"]
    if not (isinstance(lang, dict) and set(lang) == {"code", "score"} and isinstance(lang["code"], str)
            and isinstance(lang["score"], (int, float)) and 0 <= lang["score"] <= 1.0001):
        probs.append("line %d: lang %r" % (i, lang))
    s = o["sentiment"]
    if s is not None and not (isinstance(s, dict) and set(s) == {"label", "score"}):
        probs.append("line %d: sentiment %r" % (i, s))
    m = o["meta"]
    if not isinstance(m, dict) or not isinstance(m.get("latency_ms"), (int, float)) or isinstance(m.get("latency_ms"), bool) \
            or not math.isfinite(m["latency_ms"]) or m["latency_ms"] < 0:
        probs.append("line %d: meta.latency_ms in %r" % (i, m)); continue
    models = m.get("models")
    if not isinstance(models, dict) or not str(models.get("langid", "")).startswith("lid.176.ftz@sha256:8f3472cf"):
        probs.append("line %d: meta.models %r" % (i, models))
    elif s is not None and not str(models.get("sentiment", "")).startswith("amazon_review_polarity.ftz@sha256:b7eca035"):
        probs.append("line %d: meta.models.sentiment %r for a record with a sentiment" % (i, models.get("sentiment")))
    elif s is None and "sentiment" in models:
        probs.append("line %d: meta.models names sentiment, which did not run on it" % i)
if probs:
    sys.exit("; ".join(probs[:6]))
PY
    ); then ok "record_shape_and_text_roundtrip"; else nok "record_shape_and_text_roundtrip" "$why"; fi
else
    nok "record_shape_and_text_roundtrip" "nlpd pipe failed: $(tail -n 3 "$T/shape.err")"
fi

# ====================================================================================================================
# pipe: max_wait_ms closes a batch while stdin stays open
# ====================================================================================================================
conf wait <<EOF
batch:   { max_records = 1000; max_wait_ms = 50; };
kernels: { threads = 1; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
if why=$(python3 - "$NLPD" "$T/wait.conf" 2>&1 <<'PY'
import os, select, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "pipe", "-c", sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
def send(s):
    p.stdin.write(s.encode()); p.stdin.flush()
def readline(timeout):
    t0 = time.monotonic()
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        return None, time.monotonic() - t0
    return p.stdout.readline(), time.monotonic() - t0
try:
    send('{"id":"1","text":"hello world"}\n')
    line, dt = readline(30)                 # includes start-up (model load)
    if not line:
        sys.exit("no output for the first line within 30 s while stdin stays open (batch never closed)")
    send('{"id":"2","text":"bonjour tout le monde"}\n')
    line, dt = readline(5)
    if not line:
        sys.exit("no output for the second line within 5 s while stdin stays open")
    if b'"id":"2"' not in line.replace(b" ", b""):
        sys.exit("unexpected line %r" % line[:200])
    if dt > 1.5:
        sys.exit("second line came out after %.2f s; max_wait_ms = 50" % dt)
    if p.poll() is not None:
        sys.exit("nlpd exited before stdin closed")
    p.stdin.close()
    rest = p.stdout.read()
    rc = p.wait(timeout=30)
    if rest.strip() or rc != 0:
        sys.exit("after EOF: rc %d, extra output %r" % (rc, rest[:200]))
    print("second line after %.0f ms" % (dt * 1e3))
finally:
    if p.poll() is None:
        p.kill()
PY
); then ok "max_wait_ms_flushes_open_stdin ($why)"; else nok "max_wait_ms_flushes_open_stdin" "$why"; fi

# ====================================================================================================================
# pipe: a closed output ends nlpd (no hang)
# ====================================================================================================================
python3 -c '
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(30000):
        f.write(json.dumps({"id": str(i), "text": "line number %d of a long stream" % i}) + "\n")
' "$T/many.in"
timeout 60 "$NLPD" pipe -c "$T/order.conf" < "$T/many.in" 2> "$T/closed.err" | head -n 1 > "$T/closed.first"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    nok "closed_output_finite_input" "still running after 60 s"
elif [ "$rc" -ge 128 ] && [ "$rc" -ne 141 ]; then
    nok "closed_output_finite_input" "killed by a signal (rc $rc): $(tail -n 3 "$T/closed.err")"
elif ! grep -q '"id":"0"' "$T/closed.first"; then
    nok "closed_output_finite_input" "first line: $(head -c 300 "$T/closed.first")"
elif grep -q "Sanitizer" "$T/closed.err"; then
    nok "closed_output_finite_input" "$(grep -m 3 "Sanitizer" "$T/closed.err")"
else
    ok "closed_output_finite_input (rc $rc)"
fi
# After a write error nlpd stops reading: with an endless input (`tail -f log | nlpd pipe | head`) it
# must exit soon after EPIPE.
(yes '{"text":"hello world"}' 2> /dev/null) | timeout 30 "$NLPD" pipe -c "$T/order.conf" 2> "$T/closed2.err" |
    head -n 1 > "$T/closed2.first"
rc=${PIPESTATUS[1]}
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    nok "closed_output_endless_input" "nlpd still running 30 s after its output closed (it keeps reading stdin after EPIPE)"
elif [ ! -s "$T/closed2.first" ]; then
    nok "closed_output_endless_input" "no first line (rc $rc)"
else
    ok "closed_output_endless_input (rc $rc)"
fi

# ====================================================================================================================
# check: valid configs, and FILE:LINE errors
# ====================================================================================================================
conf valid <<EOF
# every section this build knows
input:   { format = "json"; text_field = "text"; id_field = "id"; max_text_bytes = 1048576; };
batch:   { max_records = 64; max_tokens = 8192; max_wait_ms = 10; };
kernels: { backend = "auto"; threads = 0; };
log:     { level = "info"; format = "text"; };
pipeline = (
  { stage = "langid"; name = "lid"; model = "$LID"; label_prefix = "__label__"; threshold = 0.0; },
  { stage = "sentiment"; model = "$POL"; when = "lang.code == 'en' && lang.score > 0.5";
    backend = "fasttext"; labels = (("__label__1", "negative"), ("__label__2", "positive"));
    lowercase = true; split_punctuation = true; }
);
EOF
if out=$(timeout 60 "$NLPD" check -c "$T/valid.conf" 2>&1); then ok "check_valid_config"; else nok "check_valid_config" "$out"; fi
# The shipped configs must pass (they use the models `make models` fetches, relative to the repo root).
for c in conf/nlpd.conf conf/demo.conf; do
    [ -f "$c" ] || continue
    if out=$(timeout 60 "$NLPD" check -c "$c" 2>&1); then ok "check_shipped_$(basename "$c")"; else nok "check_shipped_$(basename "$c")" "$out"; fi
done
printf 'pipeline = ( { stage = "langid"; model = "%s"; } );\n' "$LID" > "$T/minimal.conf"
if out=$(timeout 60 "$NLPD" check -c "$T/minimal.conf" 2>&1); then ok "check_minimal_config"; else nok "check_minimal_config" "$out"; fi

# expect_check NAME CONF LINE REGEX [FILE]: `nlpd check` exits 1 and prints FILE:LINE: <message matching REGEX>.
expect_check() {
    local name=$1 cfg=$2 line=$3 rx=$4 file=${5:-$2} out rc
    out=$(timeout 60 "$NLPD" check -c "$cfg" 2>&1)
    rc=$?
    if [ $rc -ne 1 ]; then
        nok "$name" "exit $rc (expected 1): $out"
    elif ! printf '%s\n' "$out" | grep -F -- "$file:$line: " | grep -Eiq -- "$rx"; then
        nok "$name" "no line '$file:$line: ...$rx...' in: $out"
    else
        ok "$name"
    fi
}

conf e_topkey <<EOF
# comment
colour = "blue";
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_unknown_top_level_key "$T/e_topkey.conf" 2 "unknown key.*colour"

conf e_seckey <<EOF
batch: {
  max_records = 8;
  max_recrods = 9;
};
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_unknown_key_in_section "$T/e_seckey.conf" 3 "unknown key.*max_recrods"

conf e_stagekey <<EOF
pipeline = (
  { stage = "langid";
    model = "$LID";
    treshold = 0.5; }
);
EOF
expect_check check_unknown_key_in_stage "$T/e_stagekey.conf" 4 "unknown key.*treshold"

conf e_type_str <<EOF
batch: { max_wait_ms = 10;
         max_records = "64"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_string_where_int "$T/e_type_str.conf" 2 "max_records.*integer"

conf e_type_int <<EOF

input: { text_field = 5; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_int_where_string "$T/e_type_int.conf" 2 "text_field.*string"

conf e_type_float <<EOF
pipeline = ( { stage = "langid"; model = "$LID";
               threshold = "high"; } );
EOF
expect_check check_string_where_number "$T/e_type_float.conf" 2 "threshold.*number"

conf e_type_bool <<EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               lowercase = 1; } );
EOF
expect_check check_int_where_bool "$T/e_type_bool.conf" 2 "lowercase.*(true|false|bool)"

conf e_range <<EOF
batch: { max_records = 0; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_out_of_range_int "$T/e_range.conf" 1 "max_records.*range"

conf e_range2 <<EOF
kernels: { threads = -1; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_negative_threads "$T/e_range2.conf" 1 "threads.*range"

conf e_range3 <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; threshold = 1.5; }
);
EOF
expect_check check_out_of_range_float "$T/e_range3.conf" 2 "threshold.*range"

conf e_stage <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "sentimnet"; model = "$POL"; }
);
EOF
expect_check check_unknown_stage "$T/e_stage.conf" 3 "unknown stage.*sentimnet"

conf e_nostage <<EOF
pipeline = (
  { model = "$LID"; }
);
EOF
expect_check check_stage_name_missing "$T/e_nostage.conf" 2 "stage"

conf e_model <<EOF
pipeline = (
  { stage = "langid";
    model = "$T/no-such-model.ftz"; }
);
EOF
expect_check check_missing_model_file "$T/e_model.conf" 3 "no-such-model\.ftz.*make models"

conf e_nomodel <<EOF
pipeline = ( { stage = "langid"; } );
EOF
expect_check check_model_key_missing "$T/e_nomodel.conf" 1 "model"

head -c 200000 "$LID" > "$T/trunc-lid.ftz"
conf e_corrupt <<EOF
pipeline = (
  { stage = "langid"; model = "$T/trunc-lid.ftz"; }
);
EOF
expect_check check_truncated_model "$T/e_corrupt.conf" 2 "trunc-lid\.ftz"

head -c 3 "$LID" > "$T/tiny-lid.ftz"
printf 'not a fasttext model at all, just some text\n%.0s' 1 2 3 4 5 > "$T/text-model.ftz"
conf e_corrupt2 <<EOF
pipeline = (
  { stage = "langid"; name = "a"; model = "$T/tiny-lid.ftz"; },
  { stage = "langid"; name = "b"; model = "$T/text-model.ftz"; }
);
EOF
expect_check check_tiny_model "$T/e_corrupt2.conf" 2 "tiny-lid\.ftz"
expect_check check_text_file_as_model "$T/e_corrupt2.conf" 3 "text-model\.ftz"

# A model file whose header is fine but whose data is corrupt (flipped bytes in the middle, size kept).
python3 - "$LID" "$T/flipped-lid.ftz" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
for off in range(64, 4096):      # header and args follow the magic: scramble what comes after
    d[off] ^= 0xA5
open(sys.argv[2], "wb").write(d)
PY
conf e_corrupt3 <<EOF
pipeline = ( { stage = "langid"; model = "$T/flipped-lid.ftz"; } );
EOF
expect_check check_scrambled_model "$T/e_corrupt3.conf" 1 "flipped-lid\.ftz"

# Corruption that no header check can see (fastText files carry no checksum): random bytes in the body.
# `check` may pass or fail, but cleanly; `pipe` then gives one line per input line, and nothing crashes.
python3 - "$LID" "$T" <<'PY'
import random, sys
src = open(sys.argv[1], "rb").read()
for seed, (lo, hi, n) in enumerate([(0, 120, 3), (120, 20000, 50), (20000, len(src) // 2, 500),
                                    (len(src) // 2, len(src), 2000), (0, len(src), 5000)]):
    r = random.Random(seed)
    d = bytearray(src)
    for _ in range(n):
        d[r.randrange(lo, hi)] = r.randrange(256)
    open("%s/rand%d.ftz" % (sys.argv[2], seed), "wb").write(d)
PY
head -n 200 "$T/order.in" > "$T/rand.in"
why=
for i in 0 1 2 3 4; do
    printf 'kernels: { threads = 2; };\npipeline = ( { stage = "langid"; model = "%s"; } );\n' "$T/rand$i.ftz" > "$T/rand$i.conf"
    timeout 60 "$NLPD" check -c "$T/rand$i.conf" > "$T/rand$i.chk" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then
        why="$why rand$i: check exit $rc: $(grep -m 2 -E 'Sanitizer|runtime error' "$T/rand$i.chk");"
        continue
    fi
    if [ $rc -eq 1 ] && ! grep -q "rand$i.ftz" "$T/rand$i.chk"; then
        why="$why rand$i: check error does not name the file: $(head -n 2 "$T/rand$i.chk");"
        continue
    fi
    timeout 60 "$NLPD" pipe -c "$T/rand$i.conf" < "$T/rand.in" > "$T/rand$i.out" 2> "$T/rand$i.err"
    prc=$?
    if [ $prc -ne "$rc" ]; then
        why="$why rand$i: pipe exit $prc but check exit $rc: $(grep -m 2 -E 'Sanitizer|runtime error|error' "$T/rand$i.err");"
    elif [ $prc -eq 0 ] && [ "$(wc -l < "$T/rand$i.out")" -ne 200 ]; then
        why="$why rand$i: $(wc -l < "$T/rand$i.out") lines for 200;"
    fi
done
if [ -z "$why" ]; then ok "corrupt_model_body_no_crash"; else nok "corrupt_model_body_no_crash" "$why"; fi

conf e_syntax <<EOF
batch: { max_records = 8; };
kernels: { threads = ; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_syntax_error "$T/e_syntax.conf" 2 "syntax|parse|error"

conf e_syntax2 <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; }

EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_syntax2.conf" 2>&1)
rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -Eq "^$T/e_syntax2.conf:[0-9]+: "; then
    ok "check_unterminated_list"
else
    nok "check_unterminated_list" "exit $rc: $out"
fi

conf e_enum <<EOF
log: { level = "verbose"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_enum_value "$T/e_enum.conf" 1 "level.*(one of|err|info).*verbose|verbose.*(one of|err|info)"

conf e_enum2 <<EOF
input: { format = "avro"; };
kernels: { backend = "cpu"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_enum_input_format "$T/e_enum2.conf" 1 "format.*avro|avro"

conf e_when <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "sentiment"; model = "$POL";
    when = "lang.code =="; }
);
EOF
expect_check check_bad_when_syntax "$T/e_when.conf" 4 "when"

conf e_when2 <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = "language == 'en'"; }
);
EOF
expect_check check_bad_when_field "$T/e_when2.conf" 3 "when.*(unknown|field)"

conf e_when3 <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "sentiment"; model = "$POL"; when = 5; }
);
EOF
expect_check check_when_not_string "$T/e_when3.conf" 3 "when.*string"

conf e_nopipe <<EOF
batch: { max_records = 8; };
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_nopipe.conf" 2>&1)
rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -Eq "^$T/e_nopipe.conf(:[0-9]+)?: .*pipeline"; then
    ok "check_missing_pipeline"
else
    nok "check_missing_pipeline" "exit $rc: $out"
fi

conf e_emptypipe <<EOF
pipeline = ( );
EOF
expect_check check_empty_pipeline "$T/e_emptypipe.conf" 1 "pipeline.*empty|empty"

conf e_dupname <<EOF
pipeline = (
  { stage = "langid"; model = "$LID"; },
  { stage = "langid"; model = "$LID"; }
);
EOF
expect_check check_duplicate_stage_name "$T/e_dupname.conf" 3 "langid"

conf e_badpath <<EOF
input: { text_field = "payload..body"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
expect_check check_bad_dotted_path "$T/e_badpath.conf" 1 "payload\.\.body"

conf e_labels <<EOF
pipeline = ( { stage = "sentiment"; model = "$POL";
               labels = (("__label__9", "nine")); } );
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_labels.conf" 2>&1)
rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -Eq "^$T/e_labels.conf:[0-9]+: .*__label__9"; then
    ok "check_label_not_in_model"
else
    nok "check_label_not_in_model" "exit $rc: $out"
fi

# A section or a nested setting of the wrong type (a list where a group is expected, a group where a string is,
# ...) is a FILE:LINE error, never a crash (sections used to keep NULL strings that later code read).
k=0
for bad in 'input = 5;' 'cache = 5;' 'log = 5;' 'kafka = ( 1 );' 'output = [ 1 ];' 'flow = "x";' \
    'metrics = ( { listen = "x"; } );' 'batch = 1.5;' 'kernels = true;' 'input = { text_field = { a = 1; }; };' \
    'log = { level = ( "info" ); format = [ "json" ]; };' 'cache = { backend = { }; redis = 5; };' \
    'kafka = { brokers = "embedded"; input_topics = { a = "b"; }; output_topic = "o"; dlq_topic = "d"; };' \
    'kafka = { brokers = "embedded"; input_topics = ["a"]; output_topic = "o"; dlq_topic = "d"; properties = { a = "b"; }; };'; do
    k=$((k + 1))
    printf 'pipeline = ( { stage = "langid"; model = "%s"; } );\n%s\n' "$LID" "$bad" > "$T/e_type$k.conf"
    expect_check "check_wrong_type_$k ($bad)" "$T/e_type$k.conf" 2 "must be (a group|a string|a list)"
done
printf 'pipeline = ( { stage = "langid"; model = "%s";\n  name = ( "x" ); } );\n' "$LID" > "$T/e_type_name.conf"
expect_check check_stage_name_not_string "$T/e_type_name.conf" 2 "name must be a non-empty string"

# Several errors in one section-level file: all reported, each with its line.
conf e_many <<EOF
colour = 1;
batch: { max_record = 3;
  max_wait_ms = "10"; };
input: { text_field = 5; max_text_bytes = 0; };
log: { level = "verbose"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_many.conf" 2>&1)
rc=$?
missing=
for want in "1:.*colour" "2:.*max_record" "3:.*max_wait_ms" "4:.*text_field" "4:.*max_text_bytes" "5:.*level"; do
    printf '%s\n' "$out" | grep -Eq "^$T/e_many.conf:$want" || missing="$missing $want"
done
if [ $rc -eq 1 ] && [ -z "$missing" ]; then ok "check_several_errors_in_sections"; else nok "check_several_errors_in_sections" "exit $rc, missing:$missing in: $out"; fi

# Several errors across stages: all reported.
conf e_many_stages <<EOF
pipeline = (
  { stage = "langid"; model = "$T/trunc-lid.ftz"; },
  { stage = "sentimnet"; model = "$POL"; },
  { stage = "sentiment"; model = "$T/nope.ftz"; when = "lang.code =="; },
  { stage = "langid"; name = "l2"; model = "$LID"; threshold = 2.0; }
);
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_many_stages.conf" 2>&1)
rc=$?
missing=
for want in "2:.*trunc-lid" "3:.*sentimnet" "4:.*nope\.ftz" "4:.*when" "5:.*threshold"; do
    printf '%s\n' "$out" | grep -Eq "^$T/e_many_stages.conf:$want" || missing="$missing $want"
done
if [ $rc -eq 1 ] && [ -z "$missing" ]; then ok "check_several_errors_in_stages"; else nok "check_several_errors_in_stages" "exit $rc, missing:$missing in: $out"; fi

# A file with errors both in sections and in stages reports all of them in one run.
conf e_mixed <<EOF
batch: { max_records = "many"; };
pipeline = (
  { stage = "sentimnet"; model = "$POL"; }
);
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_mixed.conf" 2>&1)
rc=$?
missing=
for want in "1:.*max_records" "3:.*sentimnet"; do
    printf '%s\n' "$out" | grep -Eq "^$T/e_mixed.conf:$want" || missing="$missing $want"
done
if [ $rc -eq 1 ] && [ -z "$missing" ]; then
    ok "check_errors_in_sections_and_stages"
else
    nok "check_errors_in_sections_and_stages" "exit $rc, missing:$missing in: $out"
fi

# @include: an error in an included file names that file, as a path that can be opened from here.
mkdir -p "$T/inc"
printf '# included\nbatch: { max_records = "x"; };\n' > "$T/inc/sub.conf"
conf e_include <<EOF
# top
@include "inc/sub.conf"
pipeline = ( { stage = "langid"; model = "$LID"; } );
EOF
out=$(timeout 60 "$NLPD" check -c "$T/e_include.conf" 2>&1)
rc=$?
f=$(printf '%s\n' "$out" | sed -n 's/^\(.*\):2: .*max_records.*/\1/p' | head -n 1)
if [ $rc -eq 1 ] && [ -n "$f" ] && [ -f "$f" ] && [ "$f" -ef "$T/inc/sub.conf" ]; then
    ok "check_error_in_included_file"
else
    nok "check_error_in_included_file" "exit $rc; expected a line '<path of inc/sub.conf>:2: ...max_records...' (path openable from the cwd), got: $out"
fi

out=$(timeout 60 "$NLPD" check -c "$T/does-not-exist.conf" 2>&1)
rc=$?
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q "does-not-exist.conf"; then ok "check_missing_config_file"; else nok "check_missing_config_file" "exit $rc: $out"; fi

# ====================================================================================================================
# CLI
# ====================================================================================================================
cli() { # NAME EXPECTED_RC REGEX(stdout+stderr, or empty) ARGS...
    local name=$1 want=$2 rx=$3 out rc
    shift 3
    out=$(timeout 60 "$NLPD" "$@" < /dev/null 2>&1)
    rc=$?
    if [ "$rc" != "$want" ]; then
        nok "$name" "exit $rc, expected $want: $(printf '%s' "$out" | head -n 5)"
    elif [ -n "$rx" ] && ! printf '%s' "$out" | grep -Eiq -- "$rx"; then
        nok "$name" "output does not match /$rx/: $(printf '%s' "$out" | head -n 5)"
    else
        ok "$name"
    fi
}
cli cli_version 0 "nlpd [0-9]" version
cli cli_help 0 "usage" help
cli cli_config_doc 0 "max_records" config-doc
cli cli_unknown_command 2 "unknown command" frobnicate
cli cli_no_command 2 "usage"
cli cli_pipe_without_config 2 "-c" pipe
cli cli_check_without_config 2 "-c" check
cli cli_pipe_extra_argument 2 "unexpected" pipe -c "$T/minimal.conf" --bogus
cli cli_pipe_missing_config 1 "does-not-exist.conf" pipe -c "$T/does-not-exist.conf"
cli cli_pipe_bad_config 1 "e_range.conf:1: .*max_records" pipe -c "$T/e_range.conf"
cli cli_pipe_missing_model 1 "no-such-model.*make models" pipe -c "$T/e_model.conf"
out=$(timeout 60 "$NLPD" config-doc 2>&1)
missing=
for k in input.text_field input.id_field input.max_text_bytes batch.max_records batch.max_wait_ms kernels.threads \
    log.level 'stage "langid"' 'stage "sentiment"' langid.model sentiment.model sentiment.lowercase; do
    printf '%s' "$out" | grep -Fq -- "$k" || missing="$missing $k"
done
if [ -z "$missing" ]; then ok "cli_config_doc_lists_keys"; else nok "cli_config_doc_lists_keys" "missing:$missing"; fi

# ====================================================================================================================
# demo
# ====================================================================================================================
python3 - "$T/demo.in" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i, t in enumerate(["I love it", "Das ist schlecht", "Worst purchase ever.", "", "C'est magnifique"], 1):
        f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    f.write("not json\n")
PY
timeout 120 "$NLPD" demo -i "$T/demo.in" > "$T/demo.out" 2> "$T/demo.err"
rc=$?
nout=$(wc -l < "$T/demo.out")
summary=$(grep '^demo: [0-9]* records' "$T/demo.err" | tail -n 1)
if [ $rc -ne 0 ]; then
    nok "demo_input_file" "exit $rc: $(tail -n 3 "$T/demo.err")"
elif [ "$nout" -ne 6 ]; then
    nok "demo_input_file" "$nout output lines for 6 records"
elif ! printf '%s' "$summary" | grep -Eq '^demo: 6 records: 4 enriched, 2 dead letters \(rejected by input: 2\)$'; then
    nok "demo_input_file" "summary line: '$summary'"
elif ! python3 -c '
import json, sys
o = [json.loads(l) for l in open(sys.argv[1])]
byid = {r["id"]: r for r in o if "id" in r}
assert byid["1"]["lang"]["code"] == "en" and byid["1"]["sentiment"] is not None, byid["1"]
assert byid["2"]["lang"]["code"] == "de" and byid["2"]["sentiment"] is None, byid["2"]
assert byid["1"]["source"]["topic"] == "events", byid["1"]
dead = sorted((r["dead_letter"] for r in o if "dead_letter" in r), key=lambda d: d["value"])
assert len(dead) == 2, dead
assert dead[0]["value"] == "not json" and "invalid JSON" in dead[0]["nlpd.error"], dead[0]
assert "empty text" in dead[1]["nlpd.error"] and dead[1]["nlpd.stage"] == "input", dead[1]
assert all(d["nlpd.source.topic"] == "events" and d["nlpd.source.offset"].isdigit() for d in dead)
' "$T/demo.out" 2> "$T/demo.py.err"; then
    nok "demo_input_file" "records: $(tail -n 2 "$T/demo.py.err")"
else
    ok "demo_input_file"
fi
cli demo_missing_input 1 "cannot open" demo -i "$T/no-such-records.jsonl"
if [ -f conf/demo-records.jsonl ]; then
    timeout 120 "$NLPD" demo > "$T/demo2.out" 2> "$T/demo2.err"
    rc=$?
    n=$(grep -c . conf/demo-records.jsonl)
    if [ $rc -eq 0 ] && [ "$(wc -l < "$T/demo2.out")" -eq "$n" ] && grep -q '^demo: ' "$T/demo2.err"; then
        ok "demo_default_records"
    else
        nok "demo_default_records" "exit $rc, $(wc -l < "$T/demo2.out") lines for $n records: $(tail -n 2 "$T/demo2.err")"
    fi
fi
if timeout 120 "$NLPD" demo -c "$T/when_en.conf" -i "$T/demo.in" > "$T/demo3.out" 2> "$T/demo3.err" &&
    [ "$(wc -l < "$T/demo3.out")" -eq 6 ] && grep -q '^demo: 6 records' "$T/demo3.err"; then
    ok "demo_with_config"
else
    nok "demo_with_config" "$(tail -n 3 "$T/demo3.err")"
fi

finish
