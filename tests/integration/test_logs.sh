#!/bin/bash
# Logs an operator reads (issue 17 item 5): ISO 8601 UTC timestamps on text lines outside journald (none when stderr
# is the journal: JOURNAL_STREAM) and in JSON "ts"; levels: Redis "connected" at notice, the CUDA backend choice
# once per process however many models, each dead letter at info with id, topic[partition]@offset, stage and
# reason and at most 20 such lines per 10 s, a broker connection failure logged once (not also as an rdkafka FAIL
# error). usage: tests/integration/test_logs.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=${1:-build/nlpd}
. tests/lib.sh
NOK_MAX=1500
T=$(mktemp -d) || exit 2
redis_pid=
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2> /dev/null; rm -rf "$T"' EXIT
LID=$PWD/models/lid.176.ftz
ISO='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'

printf 'pipeline = ( { stage = "langid"; model = "%s"; } );\n' "$LID" > "$T/text.conf"
echo '{"id": "1", "text": "hello there"}' > "$T/one.in"
timeout 60 "$NLPD" pipe -c "$T/text.conf" < "$T/one.in" > /dev/null 2> "$T/text.err"
if [ -s "$T/text.err" ] && ! grep -Evq "^$ISO <[0-7]>nlpd\[[a-z]+\]: " "$T/text.err"; then
    ok "text lines start with an ISO 8601 UTC timestamp ($(head -c 24 "$T/text.err"))"
else
    nok "text timestamps" "$(head -n 3 "$T/text.err")"
fi
# as under systemd: JOURNAL_STREAM names the stream stderr is (here: the file)
: > "$T/journal.err"
JOURNAL_STREAM=$(stat -c '%d:%i' "$T/journal.err") timeout 60 "$NLPD" pipe -c "$T/text.conf" < "$T/one.in" \
    > /dev/null 2>> "$T/journal.err"
if [ -s "$T/journal.err" ] && ! grep -Evq '^<[0-7]>nlpd\[[a-z]+\]: ' "$T/journal.err"; then
    ok "no timestamp when stderr is the journal (journald stamps lines itself)"
else
    nok "journald lines" "$(head -n 3 "$T/journal.err")"
fi
printf 'log: { format = "json"; };\npipeline = ( { stage = "langid"; model = "%s"; } );\n' "$LID" > "$T/json.conf"
timeout 60 "$NLPD" pipe -c "$T/json.conf" < "$T/one.in" > /dev/null 2> "$T/json.err"
if [ -s "$T/json.err" ] && ! grep -Evq "^\{\"ts\":\"$ISO\",\"level\":" "$T/json.err"; then
    ok "JSON lines carry ts as ISO 8601 UTC"
else
    nok "JSON ts" "$(head -n 3 "$T/json.err")"
fi

# the CUDA (or CPU) choice once, with two transformer stages that each create a backend
cat > "$T/two.conf" << 'C'
pipeline = ( { stage = "sentiment"; model = "tests/fixtures/hf-tiny/distilbert-seq-cls"; },
             { stage = "ner"; model = "tests/fixtures/hf-tiny/bert-token-cls"; } );
C
timeout 120 "$NLPD" pipe -c "$T/two.conf" < "$T/one.in" > /dev/null 2> "$T/two.err"
n=$(grep -c 'kernels: backend' "$T/two.err")
[ "$n" -eq 1 ] && ok "the kernels backend choice is logged once for two models" || nok "backend line count $n" "$(cat "$T/two.err")"

# Redis: down at start (a warning), then up: "connected" at notice, not a warning.
if command -v redis-server > /dev/null; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf 'cache: { backend = "redis"; redis = "127.0.0.1:%s"; timeout_ms = 2000; };\npipeline = ( { stage = "langid"; model = "%s"; } );\n' \
        "$PORT" "$LID" > "$T/redis.conf"
    mkfifo "$T/in.fifo"
    timeout 60 "$NLPD" pipe -c "$T/redis.conf" < "$T/in.fifo" > /dev/null 2> "$T/redis.err" &
    pipe_pid=$!
    exec 3> "$T/in.fifo"
    for _ in $(seq 100); do grep -q "lookups are misses until it is back" "$T/redis.err" && break; sleep 0.1; done
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no > "$T/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do grep -q "connected" "$T/redis.err" && break; sleep 0.1; done
    cat "$T/one.in" >&3
    exec 3>&-
    wait "$pipe_pid"
    grep -Eq "<4>nlpd\[cache\]: redis 127\.0\.0\.1:$PORT: .*lookups are misses until it is back" "$T/redis.err" \
        && grep -Eq "<5>nlpd\[cache\]: redis 127\.0\.0\.1:$PORT: connected$" "$T/redis.err" \
        && ok "Redis down is a warning, 'connected' again is a notice" \
        || nok "redis connected level" "$(cat "$T/redis.err")"
    kill "$redis_pid"
    wait "$redis_pid" 2> /dev/null
    redis_pid=
else
    echo "skip: redis-server not installed"
fi

# Dead letters: 30 undecodable records through the embedded broker: 20 info lines (the cap per 10 s), each with
# the id (none: not JSON), source topic[partition]@offset, stage and reason.
for i in $(seq 30); do echo "not json $i"; done > "$T/bad.in"
cat > "$T/demo.conf" << C
kafka: { brokers = "embedded"; group_id = "t"; input_topics = ["events"]; output_topic = "out"; dlq_topic = "dlq"; };
metrics: { listen = ""; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
C
timeout 120 "$NLPD" demo -c "$T/demo.conf" -i "$T/bad.in" > /dev/null 2> "$T/demo.err"
n=$(grep -Ec "<6>nlpd\[kafka\]: dead letter: id \(none\), events\[[0-9]+\]@[0-9]+, stage input: invalid JSON" "$T/demo.err")
[ "$n" -eq 20 ] && ok "dead letters logged at info with topic[partition]@offset and reason, 20 of 30 (rate limit)" \
    || nok "dead-letter lines: $n (want 20)" "$(grep 'dead letter' "$T/demo.err" | head -n 3)"

# A broker that refuses connections: the failure is logged once (the error callback's warning), not also as an
# rdkafka FAIL error line.
cat > "$T/dead.conf" << C
kafka: { brokers = "127.0.0.1:1"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq";
         startup_timeout_ms = 2000; };
metrics: { listen = ""; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
C
timeout 60 "$NLPD" run -c "$T/dead.conf" > /dev/null 2> "$T/dead.err"
n=$(grep -Ec 'Connect to ipv4#127\.0\.0\.1:1 failed: Connection refused \(after [0-9]+ms in state CONNECT\)$' "$T/dead.err")
if [ "$n" -eq 1 ] && ! grep -q 'nlpd\[rdkafka\]: FAIL' "$T/dead.err"; then
    ok "a refused broker connection is logged once"
else
    nok "connection failure lines: $n" "$(cat "$T/dead.err")"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
