#!/bin/bash
# `nlpd replay` against a librdkafka mock cluster (build/tests/tool_kafka, as in test_kafka.sh): dead letters that
# `nlpd run` wrote are replayed byte-identical (value, key, headers minus nlpd.*, plus nlpd.replayed); the filters
# (--from, --reason, --stage, --since/--until, --limit), --dry-run, --to and nlpd.source.topic, unreplayable dead
# letters (cut, no source topic), a failed delivery, --group commits, the summary line and the exit codes.
# Usage: tests/integration/test_replay.sh [NLPD_BINARY] (default build/nlpd). Prints `ok - name` / `not ok - name:
# why`, then `N passed, N failed`; exit 1 on any failure. Every wait is bounded (about a minute in all).
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
TOOL=$ROOT/build/tests/tool_kafka

. tests/lib.sh
NOK_MAX=2000
[ -x "$NLPD" ] || { nok "binary" "$NLPD not found (run make)"; finish; }
[ -x "$TOOL" ] || { nok "tool_kafka" "$TOOL not found (run make)"; finish; }
[ -f models/lid.176.ftz ] || { nok "models" "models/lid.176.ftz missing (run make models)"; finish; }

T=$(mktemp -d) || exit 2
PIDS=()
MOCK_FD=
cleanup() {
    local p
    [ -n "$MOCK_FD" ] && exec {MOCK_FD}>&- 2> /dev/null
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null; done
    wait 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

# The mock: 3 brokers, its bootstrap list in BOOT; stdin kept open through a fifo.
mkfifo "$T/mock.ctl" || exit 2
"$TOOL" mock 4 in dlq dlq2 replayed src_a:2 src_b:2 filt:2 lim:2 g:2 < "$T/mock.ctl" > "$T/mock.boot" \
    2> "$T/mock.err" &
PIDS+=("$!")
exec {MOCK_FD}> "$T/mock.ctl"
BOOT=
for _ in $(seq 100); do
    BOOT=$(head -n 1 "$T/mock.boot" 2> /dev/null)
    [ -n "$BOOT" ] && break
    sleep 0.1
done
[ -n "$BOOT" ] || { nok "mock" "did not start: $(cat "$T/mock.err")"; finish; }

produce() { timeout 60 "$TOOL" produce "$BOOT" "$@"; }
consume() { timeout 90 "$TOOL" consume "$BOOT" "$@"; } # TOPIC COUNT|all TIMEOUT_MS
# conf NAME [KAFKA_PROPERTIES]: the daemon's config (replay reads its kafka section).
conf() {
    cat > "$T/$1.conf" << EOF
kafka: { brokers = "$BOOT"; group_id = "nlpd"; input_topics = [ "in" ]; output_topic = "out"; dlq_topic = "dlq";
         properties = ( ("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500") ${2:-} ); };
input: { max_text_bytes = 200; };
pipeline = ( { stage = "langid"; model = "models/lid.176.ftz"; } );
EOF
    echo "$T/$1.conf"
}
C=$(conf main)
# replay ARGS...: runs nlpd replay (60 s at most); its stdout in $T/out, stderr in $T/err, status in RC.
replay() {
    timeout 60 "$NLPD" replay "$@" > "$T/out" 2> "$T/err"
    RC=$?
}
replay_summary() { grep '^replay ' "$T/out" | tail -n 1; }

# --- 1. dead letters written by nlpd run, replayed byte-identical -------------------------------------------------
# 20 good and 10 bad records (HEADERS<TAB>KEY<TAB>hex(VALUE)), every one with its own headers and key.
python3 - "$T/in.lines" "$T/bad.json" << 'PY'
import json, sys
bad = [b'{"id": "b0", "text": "unterminated', b'{"id": "b1" "text": "x"}', b'{"id": "b2", "text": "caf\xe9 \xff"}',
       b'{"id": "b3", "body": "no text"}', b'{"id": "b4", "text": ""}', b'[1, 2, 3]', b'\x00\x01\x02binary\xfe',
       json.dumps({"id": "b7", "text": "x" * 300}).encode(), b'{"id": "b8", "text": 42}', b'not json at all']
lines, want = [], []
for i in range(30):
    if i % 3 == 2:
        v = bad[i // 3]
        hdr = "trace=t%d;app=bad;tab-free=\xe4" % i
        want.append({"key": "key-%d" % i, "value_hex": v.hex(), "headers": {"trace": "t%d" % i, "app": "bad",
                                                                             "tab-free": "\xe4"}})
    else:
        v = json.dumps({"id": "g%d" % i, "text": "This is a perfectly ordinary English sentence."}).encode()
        hdr = "trace=t%d" % i
    lines.append("%s\tkey-%d\t%s" % (hdr, i, v.hex()))
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(lines) + "\n")
json.dump(want, open(sys.argv[2], "w"))
PY
produce in --header-lines --key-lines --hex < "$T/in.lines" > /dev/null || { nok "produce" "input"; finish; }
"$NLPD" run -c "$C" > /dev/null 2> "$T/run.log" &
NPID=$!
PIDS+=("$NPID")
consume dlq 10 60000 > /dev/null 2>&1
consume out 20 60000 > /dev/null 2>&1
kill -TERM "$NPID"
wait "$NPID" 2> /dev/null
consume dlq all 20000 > "$T/dlq.recs" 2> /dev/null
ndlq=$(wc -l < "$T/dlq.recs")
if [ "$ndlq" -ne 10 ]; then
    nok "nlpd run dead letters" "$ndlq dead letters, not 10: $(tail -n 5 "$T/run.log" | tr '\n' '|')"
    finish
fi

replay -c "$C" --to replayed
consume replayed all 20000 > "$T/replayed.recs" 2> /dev/null
s=$(replay_summary)
if [ $RC -eq 0 ] && [ "$s" = "replay dlq -> replayed: read 10, matched 10, produced 10, skipped by filter 0, unreplayable 0, failed 0" ] &&
    why=$(python3 - "$T/bad.json" "$T/replayed.recs" "$T/dlq.recs" << 'PY'
import json, sys
want = json.load(open(sys.argv[1]))
got = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
dlq = {(r["partition"], r["offset"]) for r in (json.loads(l) for l in open(sys.argv[3]) if l.strip())}
probs = []
if len(got) != len(want):
    probs.append("%d replayed records, not %d" % (len(got), len(want)))
by_key = {w["key"]: w for w in want}
seen = set()
for g in got:
    w = by_key.get(g["key"])
    if w is None or g["key"] in seen:
        probs.append("unexpected or doubled key %r" % g["key"]); continue
    seen.add(g["key"])
    if g["value_hex"] != w["value_hex"]:
        probs.append("%s: value %s, not %s" % (g["key"], g["value_hex"], w["value_hex"]))
    h = dict(g["headers"])
    origin = h.pop("nlpd.replayed", None)
    if h != w["headers"]:
        probs.append("%s: headers %r, not %r" % (g["key"], h, w["headers"]))
    import re
    m = re.fullmatch(r"dlq\[(\d+)\]@(\d+)", origin or "")
    if not m or (int(m.group(1)), int(m.group(2))) not in dlq:
        probs.append("%s: nlpd.replayed %r names no dead letter" % (g["key"], origin))
print("; ".join(probs[:5]) if probs else "%d records: value, key and headers as produced" % len(got))
sys.exit(1 if probs else 0)
PY
    ); then
    ok "10 dead letters of nlpd run replayed byte-identical" "$why"
else
    nok "10 dead letters of nlpd run replayed byte-identical" "exit $RC, summary '$s', ${why:-} $(head -c 300 "$T/err")"
fi

# Without --to, each goes back to its nlpd.source.topic (here: in); the filter on the stage nlpd wrote.
replay -c "$C" --stage input --dry-run
n=$(grep -c '"to":"in"' "$T/out")
if [ $RC -eq 0 ] && [ "$n" -eq 10 ] &&
    [ "$(replay_summary)" = "replay dlq -> nlpd.source.topic: read 10, matched 10, would produce 10, skipped by filter 0, unreplayable 0, failed 0" ]; then
    ok "--dry-run lists each dead letter with its source topic" "$n lines"
else
    nok "--dry-run lists each dead letter with its source topic" "exit $RC, $n lines: $(head -c 500 "$T/out")"
fi

# --- 2. filters on dead letters written here -------------------------------------------------------------------
# NAME=VALUE headers as kafka_output.c writes them; each value is its own label.
{
    for i in 0 1 2 3 4 5; do # sentiment failures in January, to src_a
        echo "nlpd.error=stage failed: out of cheese $i;nlpd.stage=sentiment;nlpd.source.topic=src_a;nlpd.source.partition=0;nlpd.source.offset=$i;nlpd.time=2026-01-0$((i + 1))T10:00:00.000Z;keep=$i	ka$i	a$i"
    done
    for i in 0 1 2 3; do # input failures in March, to src_b
        echo "nlpd.error=text too long ($i);nlpd.stage=input;nlpd.source.topic=src_b;nlpd.time=2026-03-0$((i + 1))T00:00:00Z	kb$i	b$i"
    done
    echo "nlpd.error=x;nlpd.stage=input;nlpd.source.topic=src_b;nlpd.time=2026-03-05T00:00:00Z;nlpd.original_size=999	kc	cut"
    echo "nlpd.error=x;nlpd.stage=input;nlpd.time=2026-03-06T00:00:00Z	kd	nosource"
} > "$T/dlq2.lines"
produce dlq2 --header-lines --key-lines < "$T/dlq2.lines" > /dev/null || { nok "produce" "dlq2"; finish; }

replay -c "$C" --from dlq2 --dry-run --stage sentiment
n=$(grep -c '"stage":"sentiment"' "$T/out")
consume src_a all 30000 > "$T/src_a.recs" 2> /dev/null
if [ $RC -eq 0 ] && [ "$n" -eq 6 ] && [ ! -s "$T/src_a.recs" ] &&
    [ "$(replay_summary)" = "replay dlq2 -> nlpd.source.topic: read 12, matched 6, would produce 6, skipped by filter 6, unreplayable 0, failed 0" ]; then
    ok "--dry-run --stage produces nothing"
else
    nok "--dry-run --stage produces nothing" "exit $RC, $n lines, $(wc -l < "$T/src_a.recs") in src_a: $(replay_summary)"
fi

replay -c "$C" --from dlq2 --reason "too long" --to filt
consume filt all 30000 > "$T/filt.recs" 2> /dev/null
got=$(python3 -c 'import json,sys; print(" ".join(sorted(json.loads(l)["value"] for l in open(sys.argv[1]))))' "$T/filt.recs")
if [ $RC -eq 0 ] && [ "$got" = "b0 b1 b2 b3" ] &&
    [ "$(replay_summary)" = "replay dlq2 -> filt: read 12, matched 4, produced 4, skipped by filter 8, unreplayable 0, failed 0" ]; then
    ok "--reason selects by nlpd.error" "$got"
else
    nok "--reason selects by nlpd.error" "exit $RC, got '$got': $(replay_summary)"
fi

replay -c "$C" --from dlq2 --since 2026-01-02T10:00:00Z --until 2026-01-05 --dry-run
got=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["offset"]) for l in open(sys.argv[1]) if l.startswith("{")))' "$T/out")
if [ $RC -eq 0 ] && [ "$(echo "$got" | wc -w)" -eq 3 ] && grep -q 'matched 3, would produce 3, skipped by filter 9' "$T/out"; then
    ok "--since (inclusive) / --until (exclusive) on nlpd.time" "$(replay_summary)"
else
    nok "--since (inclusive) / --until (exclusive) on nlpd.time" "exit $RC: $(cat "$T/out")"
fi

replay -c "$C" --from dlq2 --stage sentiment --limit 2 --to lim
consume lim all 30000 > "$T/lim.recs" 2> /dev/null
if [ $RC -eq 0 ] && [ "$(wc -l < "$T/lim.recs")" -eq 2 ] && grep -q 'matched 2, produced 2, .*limit reached' "$T/out"; then
    ok "--limit stops after N matches" "$(replay_summary)"
else
    nok "--limit stops after N matches" "exit $RC, $(wc -l < "$T/lim.recs") produced: $(replay_summary)"
fi

# Everything in dlq2: the cut one and the one without a source topic are not replayed (exit 1, said why); the rest
# goes to src_a / src_b with headers minus nlpd.*.
replay -c "$C" --from dlq2
consume src_a all 30000 > "$T/src_a.recs" 2> /dev/null
consume src_b all 30000 > "$T/src_b.recs" 2> /dev/null
hdr=$(python3 -c 'import json,re,sys; r=[json.loads(l) for l in open(sys.argv[1])]; h=sorted(r, key=lambda x: x["value"])[0]["headers"]; h["nlpd.replayed"]=re.sub(r"\[\d+\]@\d+$", "[P]@O", h["nlpd.replayed"]); print(h)' "$T/src_a.recs" 2> /dev/null)
if [ $RC -eq 1 ] && [ "$(wc -l < "$T/src_a.recs")" -eq 6 ] && [ "$(wc -l < "$T/src_b.recs")" -eq 4 ] &&
    grep -q 'matched 12, produced 10, skipped by filter 0, unreplayable 2, failed 0' "$T/out" &&
    grep -q 'nlpd.original_size 999' "$T/err" && grep -q 'no nlpd.source.topic' "$T/err" &&
    [ "$hdr" = "{'keep': '0', 'nlpd.replayed': 'dlq2[P]@O'}" ]; then
    ok "to nlpd.source.topic; cut or sourceless dead letters: exit 1 with the reason" "$(replay_summary)"
else
    nok "to nlpd.source.topic; cut or sourceless dead letters: exit 1 with the reason" \
        "exit $RC, src_a $(wc -l < "$T/src_a.recs"), src_b $(wc -l < "$T/src_b.recs"), headers $hdr: $(replay_summary) $(head -c 400 "$T/err")"
fi

# --group: the first run commits what it replayed, the second starts there, the third finds nothing new.
replay -c "$C" --from dlq2 --stage sentiment --to g --group replay-g --limit 3
rc1=$RC s1=$(replay_summary)
replay -c "$C" --from dlq2 --stage sentiment --to g --group replay-g
rc2=$RC s2=$(replay_summary)
replay -c "$C" --from dlq2 --stage sentiment --to g --group replay-g
rc3=$RC s3=$(replay_summary)
consume g all 30000 > "$T/g.recs" 2> /dev/null
got=$(python3 -c 'import json,sys; print(" ".join(sorted(json.loads(l)["value"] for l in open(sys.argv[1]))))' "$T/g.recs")
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc3 -eq 0 ] && [[ $s1 == *"matched 3, produced 3"*", committed" ]] &&
    [[ $s2 == *"matched 3, produced 3"*", committed" ]] && [[ $s3 == *"read 0, matched 0, produced 0"*", committed" ]] &&
    [ "$got" = "a0 a1 a2 a3 a4 a5" ]; then
    ok "--group commits and resumes" "$s1 / $s2 / $s3"
else
    nok "--group commits and resumes" "exit $rc1/$rc2/$rc3: $s1 / $s2 / $s3; g: $got"
fi

# A delivery that fails (the topic is refused by the brokers): exit 1, counted as failed.
echo "topicerr denied 29" >&"$MOCK_FD" # TOPIC_AUTHORIZATION_FAILED
C2=$(conf fail ', ("message.timeout.ms", "3000")')
replay -c "$C2" --from dlq2 --stage sentiment --to denied
if [ $RC -eq 1 ] && grep -q 'matched 6, produced 0, .*failed 6' "$T/out"; then
    ok "refused deliveries: exit 1, counted" "$(replay_summary)"
else
    nok "refused deliveries: exit 1, counted" "exit $RC: $(replay_summary) $(head -c 300 "$T/err")"
fi

# Usage errors: exit 2 with a message.
replay -c "$C" --since yesterday
rc1=$RC
replay --to x
rc2=$RC
replay -c "$C" --limit 0
if [ $rc1 -eq 2 ] && [ $rc2 -eq 2 ] && [ $RC -eq 2 ] && grep -q 'limit' "$T/err"; then
    ok "bad arguments: exit 2"
else
    nok "bad arguments: exit 2" "exits $rc1 $rc2 $RC"
fi
finish
