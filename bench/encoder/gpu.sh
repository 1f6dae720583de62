#!/bin/sh
# The encoder benchmark on a GPU (what `BENCH_BACKEND=cuda sh bench/encoder/run.sh` runs): BERT-base shapes, seq
# SEQ, nlpd's CUDA backend and PyTorch on the same GPU, every row's logits against nlpd's CPU fp32 reference.
# Each row is one process with its own time limit, so a failing or hanging row is a FAIL row and the others still
# run; the table (gpu_table.py) lists every planned row, a missing one as "FAIL not run".
# Phases (BENCH_PHASE): prep (the random-weight model and the CPU reference, which gpu-check starts in the
# background while the op tests use the GPU), rows (nlpd rows, then PyTorch's, then the A/B rows), table; all (default).
# Environment: BATCHES ("1 32 128"), BENCH_DTYPES ("fp16 bf16 fp32-tf32"; also fp32-strict, fp32 = fp32-tf32),
# RUNS (20 timed runs a row), WARMUP (3 untimed first), SEQ (128), BENCH_AB (the A/B switches, each a VAR=value run
# at AB_DTYPE (fp16) batch AB_BATCH (32), several joined by commas; "none" for none), ROW_TIMEOUT (90 s a process), REF_THREADS (online CPUs),
# BENCH_BIN, BENCH_OUT (build/bench-encoder), TORCH_PY (python3: the python that may have torch), BENCH_TABLE (a
# file for the table), GPU_BENCH_BACKEND and TORCH_DEVICE (cuda; cpu to check this script without a GPU). LAYERS, HIDDEN, HEADS, FFN as in run.sh. Exit status 0 only when every planned row passed.
set -u
cd "$(dirname "$0")/../.." || exit 2

SEQ=${SEQ:-128}
LAYERS=${LAYERS:-12}
HIDDEN=${HIDDEN:-768}
HEADS=${HEADS:-12}
FFN=${FFN:-3072}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
BATCHES=${BATCHES:-1 32 128}
DTYPES=${BENCH_DTYPES:-fp16 bf16 fp32-tf32}
# the cuBLAS attention path takes fp32 activations only: its row turns half activations off too, and compares with
# the NLPD_CUDA_ACT=fp32 row (a row VAR=a,VAR2=b sets both)
AB=${BENCH_AB-NLPD_CUDA_ACT=fp32 NLPD_CUDA_EPILOGUE=separate NLPD_CUDA_ACT=fp32,NLPD_CUDA_ATTENTION=cublas NLPD_CUDA_GRAPHS=0}
[ "$AB" = none ] && AB=
AB_DTYPE=${AB_DTYPE:-fp16}
AB_BATCH=${AB_BATCH:-32}
ROW_TIMEOUT=${ROW_TIMEOUT:-90}
REF_THREADS=${REF_THREADS:-$(nproc)}
BACKEND=${GPU_BENCH_BACKEND:-cuda} # cpu: a check of this script on a machine without a GPU
TORCH_DEVICE=${TORCH_DEVICE:-cuda}   # likewise
BIN=${BENCH_BIN:-build/bench/bench_encoder}
OUT=${BENCH_OUT:-build/bench-encoder}
TORCH_PY=${TORCH_PY:-python3}
PHASE=${BENCH_PHASE:-all}
PY=python3 # numpy for gen_model.py: the GPU machines' python has it; else Debian's
python3 -c "import numpy" 2> /dev/null || PY=/usr/bin/python3
export NLPD_LIBDIR="${NLPD_LIBDIR:-$PWD/build}" # libnlpd_cuda.so
MODEL=$OUT/bert-L$LAYERS-H$HIDDEN-A$HEADS-F$FFN
BMAX=0
for b in $BATCHES $AB_BATCH; do [ "$b" -gt "$BMAX" ] && BMAX=$b; done
# the CPU reference at the largest batch serves every row: bench_encoder's ids for batch b are the first b
# sequences of its ids for any larger batch (one generator stream), and rows do not interact (no padding)
REF=$OUT/ref-b$BMAX-s$SEQ
ROWS=$OUT/rows.jsonl
PLAN=$OUT/plan.jsonl
mkdir -p "$OUT" || exit 1

# last_line FILE: the file's last non-empty line, safe inside a JSON string
last_line() {
    grep -v '^[[:space:]]*$' "$1" 2> /dev/null | tail -n 1 | tr -d '"\\' | tr -c '[:print:]\n' ' ' | cut -c1-240
}

prep() {
    if [ ! -f "$MODEL/model.safetensors" ]; then
        echo "== writing the random-weight model to $MODEL"
        $PY bench/encoder/gen_model.py "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN" ||
            { echo "FAILED: gen_model.py ($PY)" >&2; return 1; }
    fi
    [ -x "$BIN" ] || make --no-print-directory -j"$(nproc)" "$BIN" > /dev/null ||
        { echo "FAILED: no benchmark binary $BIN" >&2; return 1; }
    # made again each time (a reference from another build of the CPU backend would not be this one's)
    echo "== CPU fp32 reference: batch $BMAX x seq $SEQ, $REF_THREADS threads"
    rm -f "$REF.json"
    if ! BENCH_WARMUP=0 BENCH_SGEMM=0 timeout -k 5 "$((ROW_TIMEOUT * 2))" "$BIN" "$MODEL" "$REF.ids" "$REF.logits" \
        "$BMAX" "$SEQ" 1 "$REF_THREADS" cpu fp32 > "$REF.out" 2> "$REF.err" ||
        ! grep -q '^{.*"nlpd_median_s"' "$REF.out"; then
        echo "FAILED: the CPU reference: $(last_line "$REF.err")" >&2
        return 1
    fi
    grep '^{' "$REF.out" > "$REF.json"
    echo "== reference ready: $REF.logits"
}

# row VARIANT DTYPE BATCH: one nlpd process; appends a result or a fail line to $ROWS
row() {
    local var="$1" dt="$2" b="$3" bdt="$2" tag runenv v why rc
    tag=$(echo "$var-$dt-b$b" | tr -c 'A-Za-z0-9_.\n-' '_')
    case $dt in
    fp32-tf32 | fp32) bdt=fp32 dt=fp32-tf32 ;;
    fp32-strict) bdt=fp32 ;;
    esac
    echo "== nlpd $BACKEND $var $dt batch $b x seq $SEQ: $WARMUP warm-up + $RUNS runs"
    # a switch this build does not read would silently measure the default: that is a failed row
    for v in $(echo "$var" | tr , ' '); do
        [ "$v" = default ] || grep -qaF "${v%%=*}" "$NLPD_LIBDIR/libnlpd_cuda.so" "$BIN" 2> /dev/null && continue
        printf '{"engine": "nlpd %s", "variant": "%s", "dtype": "%s", "batch": %d, "fail": "%s is not read by this build (not in libnlpd_cuda.so or %s)"}\n' \
            "$BACKEND" "$var" "$dt" "$b" "${v%%=*}" "$(basename "$BIN")" >> "$ROWS"
        return
    done
    # the environment of the run: the build's defaults (every A/B switch and the math mode unset), then the
    # dtype's math mode and the variant's switch
    runenv="-u NLPD_CUDA_MATH"
    for v in $(echo "$AB" | tr , ' '); do runenv="$runenv -u ${v%%=*}"; done
    [ "$dt" = fp32-strict ] && runenv="$runenv NLPD_CUDA_MATH=strict"
    [ "$var" = default ] || runenv="$runenv $(echo "$var" | tr , ' ')"
    # shellcheck disable=SC2086 # runenv: words
    env $runenv BENCH_WARMUP="$WARMUP" timeout -k 5 "$ROW_TIMEOUT" "$BIN" "$MODEL" "$OUT/ids-$tag.bin" \
        "$OUT/logits-$tag.bin" "$b" "$SEQ" "$RUNS" 1 "$BACKEND" "$bdt" > "$OUT/run.out" 2> "$OUT/run.err"
    rc=$?
    if [ $rc = 0 ] && grep -q '^{.*"nlpd_median_s"' "$OUT/run.out"; then
        printf '{"engine": "nlpd %s", "variant": "%s", "dtype": "%s", "batch": %d, "logits": "%s", "result": %s}\n' \
            "$BACKEND" "$var" "$dt" "$b" "$OUT/logits-$tag.bin" "$(grep -m1 '^{' "$OUT/run.out")" >> "$ROWS"
    else
        why=$(last_line "$OUT/run.err")
        if [ $rc = 0 ]; then
            why="no result line (exit 0)${why:+; $why}"
        elif [ $rc = 124 ] || [ $rc = 137 ]; then
            why="timed out after $ROW_TIMEOUT s${why:+; $why}"
        else
            why="exit $rc${why:+: $why}"
        fi
        printf '{"engine": "nlpd %s", "variant": "%s", "dtype": "%s", "batch": %d, "fail": "%s"}\n' \
            "$BACKEND" "$var" "$dt" "$b" "$why" >> "$ROWS"
    fi
    sed 's/^/   /' "$OUT/run.err" | grep -v '^ *$' | tail -n 3
}

rows() {
    [ -s "$REF.json" ] || { echo "FAILED: no CPU reference $REF.json (BENCH_PHASE=prep first)" >&2; return 1; }
    : > "$ROWS"
    : > "$PLAN"
    printf '{"reference": "%s", "batch": %d, "seq": %d, "model": "L=%s H=%s A=%s FFN=%s", "runs": %d, "warmup": %d}\n' \
        "$REF.logits" "$BMAX" "$SEQ" "$LAYERS" "$HIDDEN" "$HEADS" "$FFN" "$RUNS" "$WARMUP" >> "$PLAN"
    # one import (seconds with CUDA): 0 usable, 3 no CUDA device for it, anything else no torch
    "$TORCH_PY" -c 'import sys, torch; sys.exit(0 if sys.argv[1] != "cuda" or torch.cuda.is_available() else 3)' \
        "$TORCH_DEVICE" 2> /dev/null
    case $? in
    0) TORCH=ok ;;
    3) TORCH="torch: installed, but torch.cuda.is_available() is false here ($TORCH_PY)" ;;
    *) TORCH="torch: not installed on this machine ($TORCH_PY)" ;;
    esac
    tdts=
    for dt in $DTYPES; do
        [ "$dt" = fp32 ] && dt=fp32-tf32
        tdts="$tdts${tdts:+,}$dt"
        for b in $BATCHES; do
            printf '{"engine": "nlpd %s", "variant": "default", "dtype": "%s", "batch": %d}\n' "$BACKEND" "$dt" "$b" >> "$PLAN"
            [ "$TORCH" = ok ] && printf '{"engine": "torch %s", "variant": "default", "dtype": "%s", "batch": %d}\n' "$TORCH_DEVICE" "$dt" "$b" >> "$PLAN"
        done
    done
    [ "$TORCH" = ok ] || printf '{"note": "%s", "engine_missing": "torch %s"}\n' "$TORCH" "$TORCH_DEVICE" >> "$PLAN"
    for v in $AB; do
        printf '{"engine": "nlpd %s", "variant": "%s", "dtype": "%s", "batch": %d}\n' "$BACKEND" "$v" "$AB_DTYPE" "$AB_BATCH" >> "$PLAN"
    done
    # the essential rows first: nlpd's, then PyTorch's (one process: one import, one load), then the A/B rows
    for dt in $DTYPES; do
        for b in $BATCHES; do row default "$dt" "$b"; done
    done
    if [ "$TORCH" = ok ]; then
        echo "== PyTorch $TORCH_DEVICE $tdts, batches $BATCHES: $WARMUP warm-up + $RUNS runs each"
        # its rows go straight to $ROWS as they finish: a crash or a timeout keeps the rows before it
        timeout -k 5 "$((ROW_TIMEOUT * 3))" "$TORCH_PY" bench/encoder/torch_cuda.py "$MODEL" "$REF.ids" "$BMAX" "$SEQ" \
            "$RUNS" "$WARMUP" "$tdts" "$(echo $BATCHES | tr ' ' ,)" "$OUT" "$TORCH_DEVICE" >> "$ROWS" 2> "$OUT/torch.err" ||
            echo "   PyTorch exited $?: $(last_line "$OUT/torch.err")"
    else
        echo "== $TORCH"
    fi
    for v in $AB; do row "$v" "$AB_DTYPE" "$AB_BATCH"; done
}

table() {
    python3 bench/encoder/gpu_table.py "$PLAN" "$ROWS" ${BENCH_TABLE:+"$BENCH_TABLE"}
}

case $PHASE in
prep) prep ;;
rows) rows ;;
table) table ;;
all) prep && rows && table ;;
*) echo "BENCH_PHASE must be prep, rows, table or all, not '$PHASE'" >&2; exit 2 ;;
esac
