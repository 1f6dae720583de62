#!/bin/bash
# Configuration features of issue 17 item 2: ${VAR} / ${VAR:-default} / $${ in string values (through `nlpd pipe`,
# so the substituted value is the one used), an unset variable as a FILE:LINE error, *_file secrets (permissions,
# both set, a real redis-server that needs the password), `nlpd check`'s cross-key errors (feedback loops,
# metrics.listen, route without a target, a langid model that is not one) and its unreachable-Redis warning, and
# every conf/examples file passing `nlpd check` and running as it is on the embedded broker.
# usage: tests/integration/test_check.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=${1:-build/nlpd}
. tests/lib.sh
NOK_MAX=1500
T=$(mktemp -d) || exit 2
redis_pid=
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2> /dev/null; rm -rf "$T"' EXIT
LID=$PWD/models/lid.176.ftz
POL=$PWD/models/amazon_review_polarity.ftz
if [ ! -f "$LID" ] || [ ! -f "$POL" ]; then
    echo "not ok - models/lid.176.ftz and models/amazon_review_polarity.ftz needed (make models)"
    echo "0 passed, 1 failed"
    exit 1
fi

# expect NAME CONF RC PATTERN...: `nlpd check` exits RC and its stderr matches every (extended) regex.
expect() {
    local name=$1 cfg=$2 want=$3 out rc
    shift 3
    out=$(timeout 60 "$NLPD" check -c "$cfg" 2>&1 > /dev/null)
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        nok "$name" "exit $rc (want $want): $out"
        return
    fi
    for re in "$@"; do
        if ! grep -Eq -- "$re" <<< "$out"; then
            nok "$name" "no line matching '$re' in: $out"
            return
        fi
    done
    ok "$name"
}

# --- ${VAR} ---------------------------------------------------------------------------------------------------------
cat > "$T/env.conf" << 'C'
input: { text_field = "${NLPD_T_FIELD:-body}";
         id_field = "$${id}"; };
pipeline = ( { stage = "langid"; model = "${NLPD_T_MODELS}/lid.176.ftz"; } );
C
printf '%s\n' '{"${id}": "a", "body": "the cat sat on the mat", "msg": "der Hund schläft im Garten"}' > "$T/env.in"
out=$(NLPD_T_MODELS=$PWD/models timeout 60 "$NLPD" pipe -c "$T/env.conf" < "$T/env.in" 2> "$T/env.err")
if [[ $out == *'"id":"a"'* ]] && [[ $out == *'"code":"en"'* ]]; then
    ok "\${VAR} from the environment, \${VAR:-default} when unset, \$\${ a literal \${"
else
    nok "env substitution" "$out $(cat "$T/env.err")"
fi
out=$(NLPD_T_MODELS=$PWD/models NLPD_T_FIELD=msg timeout 60 "$NLPD" pipe -c "$T/env.conf" < "$T/env.in" 2>&1)
[[ $out == *'"code":"de"'* ]] && ok "\${VAR:-default} takes VAR when it is set" || nok "env set" "$out"
out=$(NLPD_T_MODELS=$PWD/models NLPD_T_FIELD= timeout 60 "$NLPD" pipe -c "$T/env.conf" < "$T/env.in" 2>&1)
[[ $out == *'"code":"en"'* ]] && ok "\${VAR:-default} takes the default when VAR is empty" || nok "env empty" "$out"
expect "an unset \${VAR} without default is a FILE:LINE error" "$T/env.conf" 1 \
    "env\.conf:3: model: environment variable NLPD_T_MODELS is not set"
printf 'input: { text_field = "${oops"; };\npipeline = ( { stage = "langid"; model = "%s"; } );\n' "$LID" > "$T/bad.conf"
expect "an unterminated \${ is a FILE:LINE error" "$T/bad.conf" 1 'bad\.conf:1: text_field: .*must be followed by a variable name'

# --- secrets in files -----------------------------------------------------------------------------------------------
echo "s3cret-pw" > "$T/pw"
chmod 0644 "$T/pw"
cat > "$T/sec.conf" << C
cache: { backend = "memory"; redis_password_file = "$T/pw"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
C
expect "a secret file others can read is an error" "$T/sec.conf" 1 "sec\.conf:1: .*readable or writable by others"
chmod 0600 "$T/pw"
expect "a secret file only nlpd reads passes" "$T/sec.conf" 0
sed -i 's|backend = "memory";|backend = "memory"; redis_password = "x";|' "$T/sec.conf"
expect "redis_password and redis_password_file together are an error" "$T/sec.conf" 1 "not both"
cat > "$T/sasl.conf" << C
kafka: { brokers = "localhost:9092"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq";
         properties = ( ("sasl.password", "inline") );
         sasl_password_file = "$T/pw"; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
C
expect "sasl.password and sasl_password_file together are an error" "$T/sasl.conf" 1 "sasl\.conf:3: .*not both"
sed -i '/"sasl\.password"/d' "$T/sasl.conf"
expect "kafka.sasl_password_file alone passes" "$T/sasl.conf" 0

# A Redis that needs the password: the file's password authenticates (second pass all hits), a wrong one does not.
if command -v redis-server > /dev/null; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --requirepass s3cret-pw \
        > "$T/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do redis-cli -p "$PORT" -a s3cret-pw --no-auth-warning ping > /dev/null 2>&1 && break; sleep 0.1; done
    cat > "$T/redis.conf" << C
cache: { backend = "redis"; redis = "127.0.0.1:$PORT"; redis_password_file = "$T/pw"; timeout_ms = 2000; };
pipeline = ( { stage = "langid"; model = "$LID"; } );
C
    printf '{"id": "%d", "text": "record number %d is here"}\n' 1 1 2 2 3 3 > "$T/r.in"
    timeout 60 "$NLPD" pipe -c "$T/redis.conf" < "$T/r.in" > /dev/null 2> "$T/r1.err"
    timeout 60 "$NLPD" pipe -c "$T/redis.conf" < "$T/r.in" > /dev/null 2> "$T/r2.err"
    grep -q "cache langid: 3 hits, 0 misses" "$T/r2.err" && ok "redis_password_file authenticates to a real Redis" \
        || nok "redis password file" "$(cat "$T/r1.err" "$T/r2.err")"
    echo wrong > "$T/pw2"
    chmod 0600 "$T/pw2"
    sed "s|$T/pw|$T/pw2|" "$T/redis.conf" > "$T/redis2.conf"
    timeout 60 "$NLPD" pipe -c "$T/redis2.conf" < "$T/r.in" > /dev/null 2> "$T/r3.err"
    grep -q "cache langid: 0 hits" "$T/r3.err" && ok "a wrong password in the file gets no cache hits" \
        || nok "wrong redis password" "$(cat "$T/r3.err")"
    kill "$redis_pid" 2> /dev/null
    wait "$redis_pid" 2> /dev/null
    redis_pid=
    # nothing listens there now: check warns, with the key's FILE:LINE, and still passes
    expect "an unreachable Redis is a warning, not an error" "$T/redis.conf" 0 \
        "redis\.conf:1: warning: cache\.redis 127\.0\.0\.1:$PORT does not answer now"
else
    echo "skip: redis-server not installed (the Redis checks)"
fi

# --- nlpd check's cross-key errors ----------------------------------------------------------------------------------
kconf() { # NAME KAFKA_BODY [METRICS] [STAGE_EXTRA]
    printf 'kafka: { brokers = "localhost:9092"; %s };\nmetrics: { listen = "%s"; };\npipeline = ( { stage = "langid"; model = "%s"; }%s );\n' \
        "$2" "${3:-127.0.0.1:9464}" "$LID" "${4:-}" > "$T/$1.conf"
}
kconf loop 'input_topics = ["events"]; output_topic = "events"; dlq_topic = "dlq";'
expect "output topic equal to an input topic: a feedback loop" "$T/loop.conf" 1 \
    'loop\.conf:1: kafka\.output_topic "events" is also an input topic .*feedback loop'
kconf loopre 'input_topics = ["^events.*"]; output_topic = "out"; dlq_topic = "events.dlq";'
expect "a dead-letter topic matched by an input regex: a feedback loop" "$T/loopre.conf" 1 \
    'kafka\.dlq_topic "events\.dlq" is also an input topic \(input_topics has "\^events\.\*"\)'
KOK='input_topics = ["events"]; output_topic = "out"; dlq_topic = "dlq";'
kconf port "$KOK" "9477"
expect "metrics.listen \"9477\" is an error" "$T/port.conf" 1 'port\.conf:2: metrics\.listen "9477" is not host:port'
kconf colon "$KOK" ":9477"
expect "metrics.listen \":9477\" is an error that names both choices" "$T/colon.conf" 1 \
    'colon\.conf:2: metrics\.listen ":9477" has no host: write "127\.0\.0\.1:9477" .* or "0\.0\.0\.0:9477"'
kconf v6 "$KOK" "[::1]:9477"
expect "metrics.listen \"[::1]:9477\" passes" "$T/v6.conf" 0
kconf route "$KOK" "127.0.0.1:9464" \
    ', { stage = "moderation"; lexicon = "models/lexicons";
     action = "route"; }'
expect "action = \"route\" without kafka.flagged_topic is an error" "$T/route.conf" 1 \
    'route\.conf:4: pipeline\[1\]: action = "route" needs a target: set kafka\.flagged_topic'
printf 'pipeline = ( { stage = "langid"; model = "%s"; } );\n' "$POL" > "$T/notlang.conf"
expect "a langid model whose labels are not languages is an error" "$T/notlang.conf" 1 \
    'notlang\.conf:1: .*is not a language-ID model: its label "__label__[12]" is not a language code'

# --- conf/examples: check, then run as they are on the embedded broker ----------------------------------------------
# One record shape for every example's input fields (text / payload.message, id / event_id).
printf '{"id": "%s", "event_id": "%s", "text": "%s", "payload": {"message": "%s"}}\n' \
    1 1 "The delivery was fast and the product is great" "The delivery was fast and the product is great" \
    2 2 "Das Paket kam leider beschädigt an" "Das Paket kam leider beschädigt an" > "$T/examples.in"
for f in conf/examples/*.conf; do
    expect "$f passes nlpd check" "$f" 0
    out=$(timeout 120 "$NLPD" demo -c "$f" -i "$T/examples.in" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && grep -q '2 records: 2 enriched, 0 dead letters' <<< "$out"; then
        ok "$f runs as it is (nlpd demo: 2 records enriched)"
    else
        nok "$f runs as it is" "exit $rc: $(tail -n 5 <<< "$out")"
    fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
