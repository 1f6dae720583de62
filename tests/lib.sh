# Helpers shared by the shell suites, sourced from the repository root (`. tests/lib.sh`). The summary line is
# what tests/run-tests.sh counts, so its format is fixed: `N passed, N failed`.
#   ok NAME [DETAIL]   a passed check: `ok - NAME` (` (DETAIL)` appended when given)
#   nok NAME WHY       a failed check: `not ok - NAME: WHY`, WHY cut to $NOK_MAX bytes when the suite sets it
#   note TEXT          a comment line `# TEXT`
#   summary            prints the summary line; returns 1 when a check failed
#   finish             summary, then exit with its status
# shellcheck shell=sh
pass=0
fail=0
ok() {
    pass=$((pass + 1))
    echo "ok - $1${2:+ ($2)}"
}
nok() {
    fail=$((fail + 1))
    if [ -n "${NOK_MAX:-}" ]; then
        echo "not ok - $1: $(printf '%s' "$2" | head -c "$NOK_MAX")"
    else
        echo "not ok - $1: $2"
    fi
}
note() { echo "# $*"; }
summary() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
finish() {
    summary
    exit $?
}
