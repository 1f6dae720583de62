#!/bin/bash
# The metrics and health server of `nlpd run` (embedded broker): while records flow, /metrics parses as the
# Prometheus text format (strict parser below: families declared, histogram buckets cumulative, +Inf equal to
# _count) and counts what was processed; /live and /ready answer 200; other paths 404, other methods 405.
# Then the server's limits (tests/integration/http_limits.py): request heads over 8 KiB refused without memory
# growth, a POST answered 405 without its body being read, idle and slow connections closed at their timeouts,
# the connection cap, and, under a small `ulimit -n`, no busy accept loop and no log flood at EMFILE.
# usage: tests/integration/test_metrics.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=$(realpath "${1:-build/nlpd}")
TOOL=$(dirname "$NLPD")/tests/tool_kafka
T=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT
if [ ! -f models/lid.176.ftz ] || [ ! -x "$TOOL" ]; then
    echo "skip: needs models/lid.176.ftz and $TOOL"
    finish
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$T/nlpd.conf" << EOF
kafka: { brokers = "embedded"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq"; };
metrics: { listen = "127.0.0.1:$PORT"; max_connections = 8; idle_timeout_ms = 2000; request_timeout_ms = 1000; };
log: { level = "info"; };
pipeline = ( { stage = "langid"; model = "$PWD/models/lid.176.ftz"; } );
EOF
"$NLPD" run -c "$T/nlpd.conf" > "$T/nlpd.log" 2>&1 &
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
{
    for i in $(seq 190); do echo "{\"id\":\"$i\",\"text\":\"record number $i is plain English text\"}"; done
    for i in $(seq 10); do echo "not json $i"; done
} > "$T/in.txt"
timeout 60 "$TOOL" produce "$bs" in < "$T/in.txt" > /dev/null 2>&1
for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m.txt"
    grep -q '^nlpd_records_produced_total 190$' "$T/m.txt" && grep -q 'reason="input"} 10$' "$T/m.txt" && break
    sleep 0.2
done
if python3 - "$T/m.txt" << 'PY' > "$T/parse.txt" 2>&1; then
import re, sys
types, samples = {}, []
for ln in open(sys.argv[1]).read().splitlines():
    if ln.startswith("# HELP "):
        continue
    if ln.startswith("# TYPE "):
        _, _, name, t = ln.split(" ", 3)
        assert t in ("counter", "gauge", "histogram"), ln
        assert name not in types, ("declared twice", name)
        types[name] = t
        continue
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (-?[0-9.e+-]+|\+Inf|NaN)', ln)
    assert m, ("bad line", ln)
    name, labels, value = m.group(1), m.group(3) or "", float(m.group(5))
    fam = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
    assert fam in types, ("undeclared", name)
    samples.append((name, labels, value))
get = {(n, l): v for n, l, v in samples}
# histograms: buckets cumulative, +Inf == _count
for fam, t in types.items():
    if t != "histogram":
        continue
    series = {}
    for n, l, v in samples:
        if n == fam + "_bucket":
            base = re.sub(r',?le="[^"]*"', "", l)
            series.setdefault(base, []).append((l, v))
    for base, b in series.items():
        vals = [v for _, v in b]
        assert vals == sorted(vals), (fam, base, vals)
        assert 'le="+Inf"' in b[-1][0], (fam, b[-1])
        assert get[(fam + "_count", base)] == vals[-1], (fam, base)
assert get[("nlpd_records_consumed_total", "")] == 200, get
assert get[("nlpd_records_produced_total", "")] == 190
assert get[("nlpd_records_dead_lettered_total", 'reason="input"')] == 10
assert get[("nlpd_end_to_end_latency_seconds_count", "")] == 190
assert get[("nlpd_stage_batch_seconds_count", 'stage="langid"')] >= 1
assert get[("nlpd_batch_records_sum", "")] == 200
assert get[("nlpd_queue_wait_seconds_count", "")] == 200
assert get[("nlpd_assigned_partitions", "")] > 0
assert any(n == "nlpd_model_info" for n, _, _ in samples)
assert get[("process_resident_memory_bytes", "")] > 0
print("ok", len(samples), "samples")
PY
    ok "/metrics parses and counts what was processed ($(tail -n 1 "$T/parse.txt"))"
else
    nok "/metrics" "$(tail -n 3 "$T/parse.txt")"
fi
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
c1=$(code "http://127.0.0.1:$PORT/live")
c2=$(code "http://127.0.0.1:$PORT/ready")
c3=$(code "http://127.0.0.1:$PORT/nope")
c4=$(code -X POST "http://127.0.0.1:$PORT/metrics")
if [ "$c1/$c2/$c3/$c4" = "200/200/404/405" ]; then
    ok "/live 200, /ready 200, unknown path 404, POST 405"
else
    nok "health endpoints" "live $c1, ready $c2, /nope $c3, POST $c4"
fi
# probe LINES: counts the ok / not ok lines of http_limits.py
probe() {
    while IFS= read -r line; do
        echo "$line"
        case $line in
            "ok - "*) pass=$((pass + 1)) ;;
            "not ok - "*) fail=$((fail + 1)) ;;
        esac
    done
}
probe < <(timeout 60 python3 tests/integration/http_limits.py limits "$PORT" "$pid" 8 2000 1000 2>&1)
c5=$(code "http://127.0.0.1:$PORT/live")
if [ "$c5" = 200 ]; then ok "/live still 200 after the limit checks"; else nok "/live after the limit checks" "$c5"; fi
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
if [ $rc -eq 0 ]; then ok "SIGTERM: exit 0"; else nok "SIGTERM" "exit $rc"; fi

# EMFILE: a daemon limited to 96 descriptors (it needs about 40) and a cap above that.
FDS=96
sed -e 's/max_connections = 8; idle_timeout_ms = 2000/max_connections = 1000; idle_timeout_ms = 60000/' \
    "$T/nlpd.conf" > "$T/emfile.conf"
(ulimit -n $FDS && exec "$NLPD" run -c "$T/emfile.conf") > "$T/emfile.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q 'assigned' "$T/emfile.log" && [ "$(code "http://127.0.0.1:$PORT/live")" = 200 ] && break
    sleep 0.2
done
probe < <(timeout 60 python3 tests/integration/http_limits.py emfile "$PORT" "$pid" "$T/emfile.log" "$FDS" 2>&1)
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
if [ $rc -eq 0 ]; then ok "SIGTERM under ulimit -n $FDS: exit 0"; else nok "SIGTERM under ulimit -n $FDS" "exit $rc, $(tail -n 2 "$T/emfile.log")"; fi
finish
