#!/bin/bash
# The README's kcat lines against the embedded broker, run exactly as written (the ```sh block after the
# <!-- embedded-kcat --> marker), in a scratch folder that links build/, conf/ and models/: the address line is
# found, an enriched record and a dead letter with its reason come back. Also checks that the address line has
# nothing else on it. usage: tests/integration/test_embedded_kcat.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
NLPD=${1:-build/nlpd}
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
nok() { fail=$((fail + 1)); echo "not ok - $1: $(printf '%s' "$2" | head -c 2000)"; }
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
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
