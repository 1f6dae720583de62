#!/bin/sh
# The include direction (README "Layout"), checked mechanically: each layer's include path (the Makefile's
# INC_* variables, passed in the environment by `make check-includes`) must reject a header of a layer above
# it and accept its own and those below. Each probe is a one-line C file in a scratch folder compiled with
# -fsyntax-only and exactly the flags the layer's objects get. Also: no include may climb out of its folder
# with "../" (that would bypass the paths), and only kernels/ includes the backend-author header.
# Prints `N passed, N failed`; exit 1 on a failure.
set -u
cd "$(dirname "$0")/.." || exit 2
: "${CC:=cc}" "${INC_common:?run through make check-includes}" "${INC_kernels:?}" "${INC_models:?}"
: "${INC_stages:?}" "${INC_daemon:?}" "${PKG_CFLAGS:=}"
. tests/lib.sh
TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT

# probe LAYER HEADER ok|reject
probe() {
    eval "flags=\$INC_$1"
    printf '#include "%s"\n' "$2" > "$TMP/probe.c"
    # shellcheck disable=SC2086 # flags are word lists
    if $CC -std=c11 -D_GNU_SOURCE -fsyntax-only $PKG_CFLAGS $flags "$TMP/probe.c" > "$TMP/out" 2>&1; then
        got=ok
    elif grep -q "$2: No such file" "$TMP/out"; then
        got=reject
    else
        got="error: $(head -n 3 "$TMP/out")"
    fi
    if [ "$got" = "$3" ]; then
        ok "$1 including \"$2\": $3"
    else
        nok "$1 including \"$2\"" "expected $3, got $got"
    fi
}

# wrong way: each must fail to compile
probe common nlpd_kernels.h reject
probe common encoder.h reject
probe kernels config.h reject
probe kernels nlpd_stage.h reject
probe kernels encoder.h reject
probe models nlpd_stage.h reject
probe models config.h reject
probe models record.h reject
probe stages config.h reject
probe stages pipeline.h reject
probe stages kafka.h reject
probe stages cpu_ops.h reject
probe daemon cpu_ops.h reject
# the right way: each must compile
probe common nlpd_error.h ok
probe common nlpd_util.h ok
probe kernels nlpd_kernels.h ok
probe kernels nlpd_util.h ok
probe models nlpd_kernels.h ok
probe models nlpd_error.h ok
probe stages nlpd_stage.h ok
probe stages encoder.h ok
probe stages nlpd_kernels.h ok
probe daemon config.h ok
probe daemon nlpd_stage.h ok
probe daemon encoder.h ok

# no "../" includes in the layered code
if grep -rn --include='*.c' --include='*.h' --include='*.cu' '#include "\.\./' common kernels stages daemon > "$TMP/up"; then
    nok "no include climbs out of its folder" "$(cat "$TMP/up")"
else
    ok "no include climbs out of its folder"
fi
# the backend-author header is for kernels/ only
if grep -rln --include='*.c' --include='*.h' '#include "nlpd_backend.h"' common stages daemon > "$TMP/be"; then
    nok "nlpd_backend.h only in kernels/" "$(cat "$TMP/be")"
else
    ok "nlpd_backend.h only in kernels/"
fi
finish
