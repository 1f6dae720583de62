#!/bin/sh
# fasttext_parity.sh MODEL LINES_FILE K: compares `fasttext predict-prob MODEL - K` with
# build/tests/tool_ftpredict line by line (same labels in the same order, |dprob| <= 1e-5).
# Prints the first 10 mismatches, the largest |dprob| and `N passed, N failed`; exit 0 iff all pass.
set -u
if [ $# -ne 3 ]; then
    echo "usage: $0 MODEL LINES_FILE K" >&2
    exit 2
fi
model=$1 lines=$2 k=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
tool=${FTPREDICT:-$root/build/tests/tool_ftpredict}
ft=${FASTTEXT:-fasttext}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! "$ft" predict-prob "$model" - "$k" < "$lines" > "$tmp/ref" 2> "$tmp/ref.err"; then
    echo "fasttext failed on $model:" >&2
    cat "$tmp/ref.err" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
if ! "$tool" "$model" "$k" < "$lines" > "$tmp/got" 2> "$tmp/got.err"; then
    echo "tool_ftpredict failed on $model:" >&2
    cat "$tmp/got.err" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

awk -v tol=1e-5 -v name="$(basename "$model") k=$k" '
function abs(x) { return x < 0 ? -x : x }
NR == FNR { ref[FNR] = $0; nref = FNR; next }
{
    got[FNR] = $0; ngot = FNR
}
END {
    n = nref > ngot ? nref : ngot
    pass = 0; fail = 0; shown = 0; maxd = 0
    for (i = 1; i <= n; i++) {
        a = (i in ref) ? ref[i] : "<missing>"; b = (i in got) ? got[i] : "<missing>"
        na = split(a, fa, " "); nb = split(b, fb, " ")
        ok = (na == nb) && !(a == "<missing>" || b == "<missing>")
        for (j = 1; ok && j <= na; j += 2) {
            if (fa[j] != fb[j]) { ok = 0; break }
            d = abs(fa[j + 1] - fb[j + 1])
            if (d > maxd) maxd = d
            if (d > tol) ok = 0
        }
        if (ok) pass++
        else {
            fail++
            if (shown++ < 10) printf("MISMATCH %s line %d:\n  fasttext: %s\n  nlpd:     %s\n", name, i, a, b)
        }
    }
    printf("%s: %d lines, max |dprob| %.3g\n", name, n, maxd)
    printf("%d passed, %d failed\n", pass, fail)
    exit fail ? 1 : 0
}' "$tmp/ref" "$tmp/got"
