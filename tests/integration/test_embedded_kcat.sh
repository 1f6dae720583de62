#!/bin/bash
# The README's kcat lines against the embedded broker, run exactly as written (the ```sh block after the
# <!-- embedded-kcat --> marker), in a scratch folder that links build/, conf/ and models/: the address line is
# found, an enriched record and a dead letter with its reason come back. Also checks that the address line has
# nothing else on it. usage: tests/integration/test_embedded_kcat.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
NLPD=${1:-build/nlpd}
. tests/lib.sh
NOK_MAX=2000
if ! command -v kcat > /dev/null; then
    echo "skip: kcat not installed (apt-get install kcat)"
    echo "0 passed, 0 failed"
    exit 0
fi
T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/build"
ln -s "$ROOT/$NLPD" "$T/build/nlpd"
ln -s "$ROOT/conf" "$ROOT/models" "$T/"
awk '/^<!-- embedded-kcat -->$/ { m = 1; next } m && /^```sh$/ { on = 1; next } on && /^```$/ { exit } on' README.md \
    > "$T/readme.sh"
if [ "$(wc -l < "$T/readme.sh")" -lt 5 ]; then
    nok "README block" "the <!-- embedded-kcat --> block is missing: $(cat "$T/readme.sh")"
else
    # a free metrics port would need an edit of the block; a taken 9464 only costs nlpd its /metrics
    out=$(cd "$T" && timeout 90 bash "$T/readme.sh" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && grep -q '^{"id":"1","text":"Das Paket kam beschädigt an".*"lang":{"code":"de"' <<< "$out" \
        && grep -q '^nlpd.error=invalid JSON.*nlpd.stage=input.* not json$' <<< "$out"; then
        ok "the README's kcat lines work as written against the embedded broker"
    else
        nok "README kcat lines" "exit $rc: $out $(tail -n 5 "$T/nlpd.log" 2> /dev/null)"
    fi
    if grep -Eq '^[0-9T:.-]+Z <5>nlpd\[kafka\]: embedded broker at 127\.0\.0\.1:[0-9]+ \(.*next line:$' "$T/nlpd.log" \
        && [ "$(grep -Ecx '127\.0\.0\.1:[0-9]+' "$T/nlpd.log")" -eq 1 ]; then
        ok "the bootstrap address is logged, then alone on one line"
    else
        nok "address line" "$(head -n 8 "$T/nlpd.log")"
    fi
fi
# kafka.embedded_port: a fixed port (relayed to the mock's ephemeral one) that kcat bootstraps through; nlpd stops
# cleanly (exit 0) with a kcat consumer still connected through it.
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed "s/dlq_topic = \"events.dlq\";/dlq_topic = \"events.dlq\"; embedded_port = $P;/" conf/examples/moderation.conf \
    | sed 's|"models/|"'"$ROOT"'/models/|g' > "$T/fixed.conf"
echo 'metrics: { listen = ""; };' >> "$T/fixed.conf"
"$ROOT/$NLPD" run -c "$T/fixed.conf" > /dev/null 2> "$T/fixed.log" &
npid=$!
for _ in $(seq 100); do grep -q 'assigned' "$T/fixed.log" && break; sleep 0.2; done
echo '{"id":"9","text":"Das Paket kam beschädigt an"}' | timeout 20 kcat -P -b "127.0.0.1:$P" -t events
got=$(timeout 20 kcat -C -b "127.0.0.1:$P" -t events.enriched -o beginning -c 1 -q 2>&1)
timeout 30 kcat -C -b "127.0.0.1:$P" -t events.enriched -o end -q > /dev/null 2>&1 &
kpid=$!
sleep 1
if grep -qx "127\.0\.0\.1:$P" "$T/fixed.log" && [[ $got == '{"id":"9"'* ]]; then
    ok "kafka.embedded_port $P: the address line names it and kcat -b 127.0.0.1:$P produces and consumes"
else
    nok "embedded_port" "$got $(head -n 5 "$T/fixed.log")"
fi
kill -TERM "$npid"
t0=$(date +%s)
wait "$npid"
rc=$?
kill "$kpid" 2> /dev/null
wait "$kpid" 2> /dev/null
if [ "$rc" -eq 0 ] && [ $(($(date +%s) - t0)) -le 20 ]; then
    ok "SIGTERM with a kcat consumer connected through the fixed port: exit 0 in $(($(date +%s) - t0)) s"
else
    nok "stop with relayed connections" "exit $rc after $(($(date +%s) - t0)) s: $(tail -n 3 "$T/fixed.log")"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
