#!/bin/bash
# The result cache end to end, with a real redis-server started here on a free loopback port: a second pass
# is served from the cache with identical output; a changed option misses; corrupted values are recomputed
# and overwritten; well-framed values with invalid UTF-8 and, with an HMAC key, unsigned or forged values are
# refused; Redis killed mid-stream loses and delays nothing and is used again after a restart; the
# daemon (nlpd demo) uses it too; the memory backend respects its bounds.
# usage: tests/integration/test_cache.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=${1:-build/nlpd}
T=$(mktemp -d)
redis_pid=
cleanup() {
    [ -n "$redis_pid" ] && { kill -9 "$redis_pid"; wait "$redis_pid"; } 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT

if ! command -v redis-server > /dev/null || [ ! -f models/lid.176.ftz ] || [ ! -f build/corpus/multilingual.jsonl ]; then
    echo "skip: needs redis-server, models/ (make models) and build/corpus (scripts/make-corpora.sh)"
    finish
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_redis() {
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no > "$T/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do
        redis-cli -p "$PORT" ping > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
stop_redis() {
    kill -9 "$redis_pid" 2> /dev/null
    wait "$redis_pid" 2> /dev/null
    redis_pid=
}
start_redis || { nok "redis-server starts" "$(tail -n 3 "$T/redis.log")"; finish; }

conf() { # backend lowercase [extra]
    cat << EOF
cache: { backend = "$1"; redis = "127.0.0.1:$PORT"; key_prefix = "t:"; timeout_ms = 100;
         breaker_failures = 2; breaker_backoff_ms = 300; max_entries = 1000; };
kernels: { threads = 2; };
batch: { max_records = 50; max_wait_ms = 5; };
log: { level = "notice"; };
pipeline = (
  { stage = "langid"; model = "models/lid.176.ftz"; },
  { stage = "sentiment"; model = "models/amazon_review_polarity.ftz"; lowercase = $2; when = "lang.code == 'en'"; }
);
EOF
}
strip() { sed 's/"latency_ms":[0-9.]*//' "$1"; }
hits() { grep -o "cache $2: [0-9]* hits, [0-9]* misses" "$1" | tail -n 1; }
IN=build/corpus/multilingual.jsonl
N=$(wc -l < "$IN")

# 1. Second pass from the cache, identical output.
conf redis true > "$T/a.conf"
"$NLPD" pipe -c "$T/a.conf" < "$IN" > "$T/p1.out" 2> "$T/p1.err"
"$NLPD" pipe -c "$T/a.conf" < "$IN" > "$T/p2.out" 2> "$T/p2.err"
h=$(hits "$T/p2.err" langid)
if cmp -s <(strip "$T/p1.out") <(strip "$T/p2.out") && python3 - "$h" "$N" << 'PY'; then
import re, sys
h, m = map(int, re.findall(r"(\d+) hits, (\d+) misses", sys.argv[1])[0])
assert h + m == int(sys.argv[2]) and h >= 0.99 * (h + m), (h, m)
PY
    ok "second pass served from Redis ($h), output identical"
else
    nok "second pass served from Redis" "langid: $h; $(tail -n 2 "$T/p2.err")"
fi

# 2. A changed output option misses (sentiment), the unchanged stage still hits (langid).
conf redis false > "$T/b.conf"
"$NLPD" pipe -c "$T/b.conf" < "$IN" > "$T/p3.out" 2> "$T/p3.err"
hs=$(hits "$T/p3.err" sentiment)
hl=$(hits "$T/p3.err" langid)
case "$hs/$hl" in
"cache sentiment: 0 hits,"*/*" 0 misses") ok "changed option misses ($hs; $hl)" ;;
*) nok "changed option misses" "$hs / $hl" ;;
esac

# 3. Corrupted cached values are recomputed and overwritten.
keys=$(redis-cli -p "$PORT" --scan --pattern 't:langid:*' | head -n 200)
for k in $keys; do redis-cli -p "$PORT" set "$k" "garbage" > /dev/null; done
"$NLPD" pipe -c "$T/a.conf" < "$IN" > "$T/p4.out" 2> "$T/p4.err"
"$NLPD" pipe -c "$T/a.conf" < "$IN" > "$T/p5.out" 2> "$T/p5.err"
h4=$(hits "$T/p4.err" langid)
h5=$(hits "$T/p5.err" langid)
if [ -n "$keys" ] && cmp -s <(strip "$T/p1.out") <(strip "$T/p4.out") &&
    python3 - "$h4" "$h5" "$N" << 'PY'; then
import re, sys
h4, m4 = map(int, re.findall(r"(\d+) hits, (\d+) misses", sys.argv[1])[0])
h5, m5 = map(int, re.findall(r"(\d+) hits, (\d+) misses", sys.argv[2])[0])
assert m4 >= 200 and m5 == 0, (h4, m4, h5, m5)
PY
    ok "corrupted values recomputed and overwritten ($h4; then $h5)"
else
    nok "corrupted values recomputed" "$h4 / $h5"
fi

# 3b. Whoever can write Redis cannot make nlpd emit what a stage would not: a well-framed value holding invalid
# UTF-8 is refused (counted, computed again), the output stays what the models say.
# setval KEY HEX: stores raw bytes under KEY.
setval() { python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$2" | redis-cli -p "$PORT" -x set "$1" > /dev/null; }
# langid's encoding: version 1, lang set, u16 length, code, f32 score (0.5 = 0000003f).
BAD_UTF8=010102fffe0000003f
FORGED=010102656e0000003f
keys=$(redis-cli -p "$PORT" --scan --pattern 't:langid:*' | head -n 50)
for k in $keys; do setval "$k" "$BAD_UTF8"; done
"$NLPD" pipe -c "$T/a.conf" < "$IN" > "$T/p6.out" 2> "$T/p6.err"
if [ -n "$keys" ] && cmp -s <(strip "$T/p1.out") <(strip "$T/p6.out") &&
    grep -Eq "cache: [0-9]+ cached values refused \(invalid ([1-9][0-9]*)," "$T/p6.err"; then
    ok "values with invalid UTF-8 refused, output unchanged ($(grep -o 'refused ([^)]*)' "$T/p6.err"))"
else
    nok "values with invalid UTF-8 refused" "$(tail -n 3 "$T/p6.err")"
fi

# 3c. cache.redis_hmac_key_file: values carry an HMAC tag. Values written without it (by an nlpd without the key)
# are refused once and replaced; then a forged but well-formed value (lang "en" for every text) is refused too.
printf 'k3y-%s\n' "$PORT" > "$T/hmac.key"
chmod 600 "$T/hmac.key"
sed "s|key_prefix = \"t:\";|key_prefix = \"t:\"; redis_hmac_key_file = \"$T/hmac.key\";|" "$T/a.conf" > "$T/h.conf"
"$NLPD" pipe -c "$T/h.conf" < "$IN" > "$T/p7.out" 2> "$T/p7.err"
"$NLPD" pipe -c "$T/h.conf" < "$IN" > "$T/p8.out" 2> "$T/p8.err"
h8=$(hits "$T/p8.err" langid)
keys=$(redis-cli -p "$PORT" --scan --pattern 't:langid:*' | head -n 50)
for k in $keys; do setval "$k" "$FORGED"; done
"$NLPD" pipe -c "$T/h.conf" < "$IN" > "$T/p9.out" 2> "$T/p9.err"
if [ -n "$keys" ] && cmp -s <(strip "$T/p1.out") <(strip "$T/p7.out") &&
    cmp -s <(strip "$T/p1.out") <(strip "$T/p9.out") &&
    grep -Eq "refused \(invalid 0, unauthenticated [0-9]{3,}\)" "$T/p7.err" && ! grep -q refused "$T/p8.err" &&
    grep -Eq "refused \(invalid 0, unauthenticated [1-9][0-9]*\)" "$T/p9.err" && ! grep -q "k3y" "$T"/p[789].err &&
    python3 - "$h8" "$N" << 'PY'; then
import re, sys
# a lookup past its deadline (a loaded machine) is a miss: the signed values are served, not necessarily all
h, m = map(int, re.findall(r"(\d+) hits, (\d+) misses", sys.argv[1])[0])
assert h + m == int(sys.argv[2]) and h >= 0.5 * (h + m), (h, m)
PY
    ok "HMAC: unsigned values refused then replaced, signed ones served ($h8), forged ones refused"
else
    nok "HMAC" "$(grep -h refused "$T"/p[789].err) / $h8 / $(tail -n 2 "$T/p9.err")"
fi
chmod 644 "$T/hmac.key"
out=$("$NLPD" check -c "$T/h.conf" 2>&1)
if [ $? -eq 1 ] && printf '%s' "$out" | grep -q "hmac.key is readable or writable by others"; then
    ok "a key file others can read is refused by nlpd check"
else
    nok "world-readable key file" "$out"
fi

# 4. Redis killed mid-stream, then restarted: every record out, none delayed past the deadline, same results.
python3 - "$IN" > "$T/slow.in" << 'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()[:600]
print("\n".join(lines))
PY
conf redis true > "$T/c.conf"
redis-cli -p "$PORT" flushall > /dev/null
(
    python3 - "$T/slow.in" << 'PY'
import sys, time
for i, line in enumerate(open(sys.argv[1])):
    sys.stdout.write(line)
    sys.stdout.flush()
    if i % 20 == 19:
        time.sleep(0.1)
PY
) | "$NLPD" pipe -c "$T/c.conf" > "$T/p6.out" 2> "$T/p6.err" &
pipe_pid=$!
sleep 1
stop_redis
sleep 1
start_redis
wait "$pipe_pid"
rc=$?
if [ $rc -eq 0 ] && [ "$(wc -l < "$T/p6.out")" -eq 600 ] &&
    cmp -s <(strip "$T/p6.out") <(head -n 600 "$T/p1.out" | sed 's/"latency_ms":[0-9.]*//') &&
    python3 - "$T/p6.out" << 'PY'; then
import json, sys
worst = max(json.loads(l)["meta"]["latency_ms"] for l in open(sys.argv[1]))
assert worst < 2000, worst  # batch wait 5 ms + cache deadline 100 ms per stage, with margin for a loaded machine
PY
    ok "Redis killed and restarted mid-stream: 600/600 out, same results, $(grep -c 'breaker' "$T/p6.err") breaker lines"
else
    nok "Redis killed mid-stream" "rc $rc, $(wc -l < "$T/p6.out") lines; $(grep -v '^{' "$T/p6.err" | tail -n 3)"
fi
"$NLPD" pipe -c "$T/c.conf" < "$T/slow.in" > /dev/null 2> "$T/p7.err"
h7=$(hits "$T/p7.err" langid)
case "$h7" in
"cache langid: 0 hits"*) nok "reconnects after the restart" "$h7" ;;
"cache langid: "*) ok "reconnects after the restart and hits again ($h7)" ;;
*) nok "reconnects after the restart" "$(tail -n 2 "$T/p7.err")" ;;
esac

# 5. The daemon uses the cache: two demo runs over the same records share Redis.
{
    echo 'kafka: { brokers = "embedded"; input_topics = ["events"]; output_topic = "out"; dlq_topic = "dlq"; };'
    conf redis true
} > "$T/d.conf"
head -n 30 "$IN" > "$T/d.in"
timeout 120 "$NLPD" demo -c "$T/d.conf" -i "$T/d.in" > /dev/null 2> "$T/d1.err"
timeout 120 "$NLPD" demo -c "$T/d.conf" -i "$T/d.in" > "$T/d2.out" 2> "$T/d2.err"
if grep -q "demo: cache langid: 30 hits, 0 misses" "$T/d2.err" && [ "$(wc -l < "$T/d2.out")" -eq 30 ]; then
    ok "nlpd demo (the Kafka daemon) served from Redis on its second run"
else
    nok "daemon uses the cache" "$(grep 'demo:' "$T/d2.err" | tail -n 3)"
fi

# 6. The memory backend keeps within max_entries (1000 here): 500 texts twice are all served the second time;
# the 4824 texts twice are not (an LRU of 1000 has evicted each before it comes back), which an unbounded
# cache would have served.
# One worker: with two, one can be descheduled between its lookup and its store while the other runs ten
# batches ahead (seen under ASan on a loaded machine), and the count would depend on scheduling.
conf memory true | sed 's/threads = 2;/threads = 1;/' > "$T/m.conf"
head -n 500 "$IN" > "$T/m500"
cat "$T/m500" "$T/m500" | "$NLPD" pipe -c "$T/m.conf" > "$T/m1.out" 2> "$T/m1.err"
cat "$IN" "$IN" | "$NLPD" pipe -c "$T/m.conf" > "$T/m2.out" 2> "$T/m2.err"
h1=$(hits "$T/m1.err" langid)
h2=$(hits "$T/m2.err" langid)
strip "$T/m1.out" > "$T/m1.s"
if [ "$h1" = "cache langid: 500 hits, 500 misses" ] && [ "$h2" = "cache langid: 0 hits, $((2 * N)) misses" ] &&
    cmp -s <(head -n 500 "$T/m1.s") <(tail -n 500 "$T/m1.s"); then
    ok "memory backend bounded ($h1; $h2)"
else
    nok "memory backend bounded" "$h1; $h2"
fi
finish
