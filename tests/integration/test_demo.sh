#!/bin/bash
# `make demo` as a newcomer sees it: scripts/demo.sh (what the Makefile runs) on the built-in configuration and
# conf/demo-records.jsonl, bounded in time. The enriched records come first, then the dead letters, then the
# summary; the summary names at least three stages (langid -> moderation -> sentiment, the models `make models`
# fetches) and what they found, reads no throughput or latency numbers, and says how to add a Hugging Face folder.
# usage: tests/integration/test_demo.sh [path/to/nlpd]   (scripts/demo.sh runs build/nlpd)   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
if [ ! -f models/lid.176.ftz ] || [ ! -d models/lexicons ] || [ ! -f models/amazon_review_polarity.ftz ] || [ ! -x build/nlpd ]; then
    echo "skip: needs models/ (make models) and build/nlpd"
    finish
fi
start=$(date +%s)
# One stream, in the order a terminal shows it (records are flushed line by line before the summary).
timeout 60 sh scripts/demo.sh > "$T/all" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc -eq 0 ]; then ok "demo exits 0 within 60 s" "${took} s"; else nok "demo exits 0 within 60 s" "exit $rc after ${took} s: $(tail -n 3 "$T/all")"; fi
n=$(grep -c . conf/demo-records.jsonl)
if python3 - "$T/all" "$n" > "$T/py" 2>&1 << 'PY'; then
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
n = int(sys.argv[2])
kinds = []  # r (enriched record), d (dead letter), s (summary)
recs, dead, summary = [], [], []
for ln in lines:
    if ln.startswith("{"):
        o = json.loads(ln)
        if "dead_letter" in o:
            kinds.append("d"); dead.append(o)
        else:
            kinds.append("r"); recs.append(o)
    elif ln.startswith("demo: "):
        kinds.append("s"); summary.append(ln)
order = re.sub(r"(.)\1*", r"\1", "".join(kinds))
assert order == "rds", f"sections in the order {order!r}, not records, dead letters, summary"
assert len(recs) + len(dead) == n, (len(recs), len(dead), n)
assert len(dead) == 3 and all(d["dead_letter"]["nlpd.stage"] == "input" for d in dead), dead
assert summary[0] == f"demo: {n} records: {len(recs)} enriched, 3 dead letters (rejected by input: 3)", summary[0]
m = [s for s in summary if s.startswith("demo: ") and " stages: " in s]
assert m, summary
stages = m[0].split(" stages: ", 1)[1].split(" -> ")
assert len(stages) >= 3 and stages == ["langid", "moderation", "sentiment"], stages
assert int(m[0].split()[1]) == len(stages), m[0]
# each stage visible in the records: every record has a language, moderation where a list exists, English sentiment
assert all(r["lang"] and r["lang"]["code"] for r in recs)
assert sum(1 for r in recs if r["moderation"]) >= 20, "moderation ran on too few records"
flagged = [r["id"] for r in recs if r["moderation"] and r["moderation"]["flagged"]]
assert flagged == ["demo-37"], flagged
assert all((r["sentiment"] is not None) == (r["lang"]["code"] == "en") for r in recs)
assert any(s.startswith("demo: moderation: 1 of ") for s in summary), summary
assert any("Hugging Face" in s and "ner" in s for s in summary), "no line on adding a Hugging Face folder"
text = "\n".join(summary)
assert not re.search(r"records/s|p50|p99|latency", text), "the summary reads like a benchmark: " + text
print(f"{len(recs)} records, {len(dead)} dead letters, {len(summary)} summary lines; stages {' -> '.join(stages)}")
PY
    ok "records, then dead letters, then a summary of 3 stages" "$(cat "$T/py")"
else
    nok "demo output" "$(tail -n 3 "$T/py")"
fi
# Nothing but nlpd's own notices (after their ISO 8601 time) and the embedded broker's bootstrap address
# alone on its line, besides the records and the summary (no compiler or make lines).
other=$(grep -v '^{' "$T/all" | grep -v '^demo: ' | grep -Ev '^([0-9T:.-]+Z )?<5>nlpd\[' |
    grep -Ev '^127\.0\.0\.1:[0-9]+$' || true)
if [ -z "$other" ]; then ok "quiet: no other lines"; else nok "quiet: no other lines" "$other"; fi
# The Makefile's demo target builds only build/nlpd, silently.
if grep -A6 '^demo:' Makefile | grep -q -- '-s -j.*(BUILD)/nlpd$' && grep -A6 '^demo:' Makefile | grep -q 'scripts/demo.sh'; then
    ok "make demo builds build/nlpd only, silently, then runs scripts/demo.sh"
else
    nok "make demo recipe" "$(grep -A6 '^demo:' Makefile)"
fi
finish
