#!/bin/bash
# conf/monitoring against a live nlpd: `promtool check rules` and `promtool test rules` (alerts_test.yml) on the
# alert rules; then `nlpd run` on the embedded broker (4 input partitions, langid -> moderation word lists ->
# sentiment, memory cache) is scraped before any record (lag of every assigned partition), and after records
# flowed (build info, start time, output per topic, flagged and routed counts, HELP units); every metric name in the alert
# rules and the Grafana dashboard's expressions must be in that scrape.
# usage: tests/integration/test_monitoring.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=$(realpath "${1:-build/nlpd}")
TOOL=$(dirname "$NLPD")/tests/tool_kafka
RULES=conf/monitoring/alerts.yml
DASH=conf/monitoring/grafana-dashboard.json
T=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# --- the rules through promtool ---
if command -v promtool > /dev/null; then
    if out=$(timeout 60 promtool check rules "$RULES" 2>&1); then ok "promtool check rules" "$(echo "$out" | grep -o '[0-9]* rules found')"; else nok "promtool check rules" "$out"; fi
    if out=$(timeout 60 promtool test rules tests/integration/alerts_test.yml 2>&1); then ok "promtool test rules (dead-letter ratio over reasons, lag growth, no output, paused, reload, breaker)"; else nok "promtool test rules" "$out"; fi
else
    echo "skipped: promtool check rules / test rules: promtool is missing (Debian package prometheus: make deps)"
fi
if python3 -m json.tool "$DASH" > /dev/null 2>&1; then ok "dashboard is JSON"; else nok "dashboard is JSON" "$(python3 -m json.tool "$DASH" 2>&1 | tail -1)"; fi

# --- a live scrape ---
if [ ! -f models/lid.176.ftz ] || [ ! -d models/lexicons ] || [ ! -f models/amazon_review_polarity.ftz ] || [ ! -x "$TOOL" ]; then
    echo "skip: needs models/ (make models) and $TOOL"
    finish
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$T/nlpd.conf" << EOF
kafka: { brokers = "embedded"; embedded_partitions = 4; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq";
         properties = ( ("statistics.interval.ms", "500") ); };
metrics: { listen = "127.0.0.1:$PORT"; };
output: { routes = ( { name = "review"; when = "moderation.flagged"; topic = "review"; } ); };
cache: { backend = "memory"; };
pipeline = (
  { stage = "langid"; model = "$PWD/models/lid.176.ftz"; },
  { stage = "moderation"; lexicon = "$PWD/models/lexicons"; lexicon_by_lang = true; },
  { stage = "sentiment"; model = "$PWD/models/amazon_review_polarity.ftz"; when = "lang.code == 'en'"; }
);
EOF
"$NLPD" run -c "$T/nlpd.conf" > "$T/nlpd.log" 2>&1 &
pid=$!
bs=
for _ in $(seq 150); do
    bs=$(grep -o 'embedded broker at [0-9.]*:[0-9]*' "$T/nlpd.log" | awk '{print $4}')
    [ -n "$bs" ] && grep -q 'assigned' "$T/nlpd.log" && break
    sleep 0.2
done
if [ -z "$bs" ]; then
    nok "daemon starts" "$(tail -n 3 "$T/nlpd.log")"
    finish
fi
# Before any record: every assigned partition has a lag (librdkafka reports -1 until one was consumed).
n=0
for _ in $(seq 50); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m0.txt"
    n=$(grep -c '^nlpd_consumer_lag_records{topic="in",partition="[0-3]"} 0$' "$T/m0.txt")
    [ "$n" -eq 4 ] && break
    sleep 0.2
done
if [ "$n" -eq 4 ]; then ok "lag 0 for all 4 assigned partitions before any record"; else nok "lag of every assigned partition" "$(grep '^nlpd_consumer_lag' "$T/m0.txt")"; fi

# 20 clean records, 3 profane ones (flagged, routed to "review"), 2 that are not JSON (dead letters).
{
    for i in $(seq 20); do echo "{\"id\":\"$i\",\"text\":\"record number $i is plain English text about the weather\"}"; done
    for i in 1 2 3; do echo "{\"id\":\"f$i\",\"text\":\"this is shit, damn it, number $i\"}"; done
    echo "not json 1"
    echo "not json 2"
} > "$T/in.txt"
timeout 60 "$TOOL" produce "$bs" in < "$T/in.txt" > /dev/null 2>&1
for _ in $(seq 150); do
    curl -s "http://127.0.0.1:$PORT/metrics" > "$T/m.txt"
    grep -q '^nlpd_records_produced_total 23$' "$T/m.txt" && grep -q '^nlpd_output_records_total{topic="dlq"} 2$' "$T/m.txt" && break
    sleep 0.2
done
check_line() { # NAME REGEX
    if grep -Eq "$2" "$T/m.txt"; then ok "$1"; else nok "$1" "no line matches $2"; fi
}
check_line "records flowed (23 enriched)" '^nlpd_records_produced_total 23$'
check_line "output per topic: out" '^nlpd_output_records_total\{topic="out"\} 20$'
check_line "output per topic: review (the route)" '^nlpd_output_records_total\{topic="review"\} 3$'
check_line "routed records (arch-data's counter, in the dashboard)" '^nlpd_routed_records_total\{route="review",topic="review"\} 3$'
check_line "output per topic: dlq" '^nlpd_output_records_total\{topic="dlq"\} 2$'
check_line "flagged records counted" '^nlpd_records_flagged_total 3$'
ver=$("$NLPD" version | awk '{print $2}')
check_line "nlpd_build_info carries nlpd version's $ver" "^nlpd_build_info\{version=\"$ver\",librdkafka=\"[0-9.]+\"\} 1$"
start=$(awk '/^process_start_time_seconds /{print int($2)}' "$T/m.txt")
now=$(date +%s)
if [ -n "$start" ] && [ "$start" -le "$now" ] && [ "$start" -ge $((now - 300)) ]; then
    ok "process_start_time_seconds is this run's start" "$((now - start)) s ago"
else
    nok "process_start_time_seconds" "got '${start}', now $now"
fi
if grep '^# HELP nlpd_stage_batch_seconds' "$T/m.txt" | grep -qi 'millisecond'; then
    nok "nlpd_stage_batch_seconds HELP unit" "$(grep '^# HELP nlpd_stage_batch_seconds' "$T/m.txt")"
else
    ok "nlpd_stage_batch_seconds HELP says seconds"
fi

# Metric names of the rules and the dashboard, each in the scrape. A name is an identifier in an expression that
# is not a function, keyword, label (inside {} or by/without/on/ignoring ()), range ([...]) or string.
cat > "$T/names.py" << 'PY'
import json, re, sys
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "inf", "nan", "le", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile"}
def names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    out = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 2e3, 0.5
        out.add(m.group(0))
    return out
def exprs_rules(path):
    text = open(path).read()  # expr: | blocks and one-line exprs, without a YAML module
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        if m:
            if m.group(2).strip() in ("|", ">"):
                ind, block = len(m.group(1)), []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > ind):
                    block.append(lines[i]); i += 1
                out.append("\n".join(block)); continue
            out.append(m.group(2))
        i += 1
    return out
def exprs_dash(path):
    out = []
    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str): out.append(o["expr"])
            if o.get("type") == "query" and isinstance(o.get("query"), str): out.append(o["query"].replace("label_values(", "x(").rsplit(",", 1)[0] + ")")
            for v in o.values(): walk(v)
        elif isinstance(o, list):
            for v in o: walk(v)
    walk(json.load(open(path)))
    return out
scrape = set()
for ln in open(sys.argv[1]):
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", ln)
    if m and not ln.startswith("#"): scrape.add(m.group(1))
src = [("rules", e) for e in exprs_rules(sys.argv[2])] + [("dashboard", e) for e in exprs_dash(sys.argv[3])] + \
      [("extra", e) for e in sys.argv[4:]]
found, missing = set(), []
for where, e in src:
    for n in names(e):
        found.add(n)
        if n not in scrape: missing.append(f"{where}: {n}")
print(f"{len(src)} expressions, {len(found)} metric names")
for m in sorted(set(missing)): print("missing", m)
sys.exit(1 if missing or not found else 0)
PY
if out=$(python3 "$T/names.py" "$T/m.txt" "$RULES" "$DASH" 2>&1); then
    ok "every metric of the rules and the dashboard is in the live scrape" "$(echo "$out" | head -1)"
else
    nok "metric names against the live scrape" "$out"
fi
# The checker itself: a name that nlpd does not export is caught, a function or label is not taken for one.
if python3 "$T/names.py" "$T/m.txt" "$RULES" "$DASH" 'sum by (stage) (rate(nlpd_no_such_metric_total{reason="x"}[5m]))' \
    > "$T/neg.txt" 2>&1 || ! grep -q 'missing extra: nlpd_no_such_metric_total' "$T/neg.txt" || [ "$(grep -c '^missing' "$T/neg.txt")" -ne 1 ]; then
    nok "the name checker catches an unknown metric (and only it)" "$(cat "$T/neg.txt")"
else
    ok "the name checker catches an unknown metric (and only it)"
fi
kill "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
pid=
finish
