#!/bin/bash
# The CUDA backend's checks on a GPU machine, in one run of at most GPU_CHECK_BUDGET seconds (default 540, to fit a
# 600 s command), with a summary in $OUT/gpu-check.txt (build/gpu-check.txt when OUT is unset) that always ends
# with an "overall: PASS|FAIL" line, and the full log next to it. Run from anywhere in the repository:
#   scripts/gpu-check.sh            build (or use the carried bundle), then, each step time-boxed and skipped when
#                                   the budget cannot hold it: device info; test_cuda_ops (every op vs the CPU,
#                                   error paths, fp16/bf16, chunked paths, fixture parity); nlpd infer --backend
#                                   cuda (fp32/fp16/bf16, fp32 logits = CPU logits); test_encoder on the GPU (auto);
#                                   nlpd pipe with kernels.backend = "cuda" (sentiment + ner stages); the op tests
#                                   under compute-sanitizer memcheck; the encoder benchmark (BERT-base, seq 128,
#                                   batch 1/32/128, fp32 and fp16, PyTorch on the same GPU when it is there)
#   scripts/gpu-check.sh --pack     on a build machine without a GPU: build, and put the binaries and the
#                                   non-system shared libraries they need into .gpu-bundle/ (ignored by git), for a
#                                   GPU machine that lacks the Debian -dev packages `make` needs. Carry .gpu-bundle
#                                   there (about 52 MB; the working tree travels too, 64 MiB in all); the check then
#                                   rebuilds only libnlpd_cuda.so with that machine's nvcc. Pack again after any
#                                   change outside kernels/cuda/ (the bundle's test binaries are what runs).
# Environment: GPU_CHECK_BUDGET (seconds, default 540), RUNS (benchmark runs, default 5), GPU_CHECK_SKIP (words
# among: sanitizer bench pipe encoder infer) to leave steps out.
set -u
cd "$(dirname "$0")/.." || exit 2
BUNDLE=.gpu-bundle

if [ "${1:-}" = "--pack" ]; then
    make -j"$(nproc)" all > /dev/null || exit 1
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" || exit 1
    for b in build/nlpd build/tests/test_cuda_ops build/tests/test_encoder build/bench/bench_encoder; do
        strip -o "$BUNDLE/bin/$(basename "$b")" "$b" || exit 1
    done
    # libnlpd_cuda.so is not packed: the GPU machine builds it (a stale copy next to the binaries would win, since
    # nlpd looks next to its executable first)
    # every library the binaries need except the C/C++ runtime, which the GPU machine has (glibc >= 2.34 needed)
    ldd "$BUNDLE"/bin/nlpd "$BUNDLE"/bin/test_* "$BUNDLE"/bin/bench_encoder | awk '$3 ~ /^\// {print $3}' | sort -u |
        grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' |
        while read -r l; do cp -L "$l" "$BUNDLE/lib/"; done
    ex=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$ex")" &&
        { grep -qxF "/$BUNDLE/" "$ex" 2> /dev/null || echo "/$BUNDLE/" >> "$ex"; }
    git rev-parse HEAD > "$BUNDLE/commit" 2> /dev/null
    du -sh "$BUNDLE"
    exit 0
fi

BUDGET=${GPU_CHECK_BUDGET:-540}
T0=$(date +%s)
DEST=${OUT:-build}
mkdir -p "$DEST" build
SUM=$DEST/gpu-check.txt
LOG=$DEST/gpu-check.log
STEP=$DEST/step.out
: > "$SUM"
: > "$LOG"
say() { echo "$*" | tee -a "$SUM"; }
status=0
finished=0
# the summary's last line, however the script ends (a failed build, a signal, the end)
on_exit() {
    if [ $finished = 0 ]; then
        say "FAILED gpu-check.sh stopped early ($(($(date +%s) - T0)) s in)"
        status=1
    fi
    say "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(($(date +%s) - T0)) s (full log: $LOG)"
}
trap on_exit EXIT
trap 'exit 1' INT TERM HUP
left() { echo $((BUDGET - ($(date +%s) - T0))); }
skipped() { case " ${GPU_CHECK_SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }

# box SECONDS: the time a step may take, or nothing (and a "skip" line) when fewer than MIN seconds are left
box() {
    local want=$1 min=$2 name=$3 l
    l=$(($(left) - 10))
    if [ "$l" -lt "$min" ]; then
        say "skip   $name (${l} s of the budget left, it needs ${min})"
        return 1
    fi
    [ "$want" -gt "$l" ] && want=$l
    echo "$want"
}

# check NAME SECONDS CMD...: runs CMD under a time box (output to the log), records ok / FAILED with its last lines
check() {
    local name=$1 secs=$2 t0 rc
    shift 2
    t0=$(date +%s)
    echo "== $name (box ${secs} s): $*" >> "$LOG"
    timeout -k 10 "$secs" "$@" > "$STEP" 2>&1
    rc=$?
    cat "$STEP" >> "$LOG"
    if [ $rc -eq 0 ]; then
        say "ok     $name ($(($(date +%s) - t0)) s)"
    else
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && rc="$rc: timed out after ${secs} s"
        say "FAILED $name (exit $rc, $(($(date +%s) - t0)) s)"
        tail -n 15 "$STEP" | cut -c1-300 | sed 's/^/       /' | tee -a "$SUM"
        status=1
    fi
    return 0
}

say "# nlpd CUDA backend check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2> /dev/null), budget ${BUDGET} s"
say "$( (nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || echo "nvidia-smi failed") 2>&1 | head -n 2)"
NVCC_BIN=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
say "nvcc: $("$NVCC_BIN" --version 2> /dev/null | tail -n 1)"

# --- build: the whole tree when its dependencies are here, else the carried bundle plus a fresh .so ---
BIN=build
TESTS=build/tests
BENCH=build/bench/bench_encoder
t=$(box 300 60 "build") || exit 1
if pkg-config --exists libconfig jansson libutf8proc libcrypto openblas rdkafka libevent avro-c hiredis libsystemd 2> /dev/null &&
    timeout -k 10 "$t" make -j"$(nproc)" all > "$DEST/build.out" 2>&1; then
    say "ok     make all ($(($(date +%s) - T0)) s)"
    export NLPD_LIBDIR=$PWD/build
elif [ -x "$BUNDLE/bin/nlpd" ]; then
    if [ -s "$DEST/build.out" ]; then
        say "note   make all failed here ($(grep -m1 -iE 'error|No package' "$DEST/build.out" | cut -c1-150)); using $BUNDLE"
    else
        say "note   the build dependencies are missing here (pkg-config); using $BUNDLE (packed at $(cat "$BUNDLE/commit" 2> /dev/null))"
    fi
    rm -f build/libnlpd_cuda.so "$BUNDLE/bin/libnlpd_cuda.so"
    t=$(box 240 30 "make cuda") || exit 1
    check "make cuda (libnlpd_cuda.so with this machine's nvcc)" "$t" make -j"$(nproc)" cuda
    if [ ! -f build/libnlpd_cuda.so ]; then
        say "FAILED no libnlpd_cuda.so: nothing to check"
        status=1
        exit 1
    fi
    export LD_LIBRARY_PATH=$PWD/$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export NLPD_LIBDIR=$PWD/build
    BIN=$BUNDLE/bin
    TESTS=$BUNDLE/bin
    BENCH=$BUNDLE/bin/bench_encoder
    missing=$(ldd "$BIN/nlpd" "$TESTS/test_cuda_ops" 2>&1 | grep 'not found' | sort -u | tr -s ' \t' ' ' | head -n 5)
    if [ -n "$missing" ]; then
        say "FAILED the bundle's binaries miss libraries here: $missing"
        status=1
        exit 1
    fi
else
    say "FAILED make all, and no $BUNDLE (run scripts/gpu-check.sh --pack where the build works, carry .gpu-bundle)"
    tail -n 20 "$DEST/build.out" 2> /dev/null | cut -c1-300 | tee -a "$SUM"
    status=1
    exit 1
fi
say "libnlpd_cuda.so: $NLPD_LIBDIR; $(readelf -d build/libnlpd_cuda.so | grep -oE 'lib(cudart|cublas)[^]]*' | tr '\n' ' ')"
say "NEEDED CUDA libraries of nlpd: $(readelf -d "$BIN/nlpd" | grep -c 'NEEDED.*\(cuda\|cublas\)') (want 0)"

# --- ops and fixtures: the most important step ---
if t=$(box 240 60 "test_cuda_ops"); then
    check "test_cuda_ops (every op vs CPU, errors, fp16/bf16, chunking, fixture parity)" "$t" "$TESTS/test_cuda_ops"
    grep -E '^(cuda:|model |auto picked|skipped)|passed, .* failed|^FAIL|^  ' "$STEP" | head -n 40 | cut -c1-250 |
        sed 's/^/       /' | tee -a "$SUM"
    grep -q '^skipped' "$STEP" && { say "FAILED the CUDA tests skipped on a GPU machine"; status=1; }
fi

# --- nlpd infer ---
if ! skipped infer; then
    printf '%s\n' '{"text": "the service was great"}' '{"text": "terrible, never again", "text_pair": "ok"}' > build/gpu-in.jsonl
    for dt in fp32 fp16 bf16; do
        t=$(box 60 20 "nlpd infer $dt") || break
        check "nlpd infer --backend cuda --dtype $dt" "$t" "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls \
            --backend cuda --dtype "$dt" < build/gpu-in.jsonl
        grep -E 'kernels:|logits' "$STEP" | head -n 3 | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
    done
    if t=$(box 60 20 "infer parity"); then
        timeout 60 "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cpu < build/gpu-in.jsonl \
            > build/gpu-cpu.out 2> /dev/null
        timeout 60 "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cuda < build/gpu-in.jsonl \
            > build/gpu-cuda.out 2> /dev/null
        check "nlpd infer: cuda fp32 logits = cpu logits within 1e-4" "$t" python3 - build/gpu-cpu.out build/gpu-cuda.out << 'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 2, (len(a), len(b))
d = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p["logits"], q["logits"]))
print("max |diff|", d)
assert d <= 1e-4, d
PY
    fi
fi

# --- the encoder tests with backend auto (the GPU here) ---
if ! skipped encoder && t=$(box 120 30 "test_encoder"); then
    check "test_encoder on the GPU (backend auto)" "$t" "$TESTS/test_encoder"
    grep -E 'max \|diff\||passed' "$STEP" | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
fi

# --- nlpd pipe with kernels.backend = "cuda": an HF sentiment stage and an NER stage ---
if ! skipped pipe && t=$(box 120 30 "nlpd pipe"); then
    cat > build/gpu-pipe.conf << 'EOF2'
input: { format = "json"; text_field = "text"; id_field = "id"; };
kernels: { backend = "cuda"; device = 0; dtype = "fp16"; threads = 4; };
log: { level = "info"; };
pipeline = (
  { stage = "sentiment"; model = "tests/fixtures/hf-tiny/bert-seq-cls"; },
  { stage = "ner"; model = "tests/fixtures/hf-tiny/bert-token-cls"; }
);
EOF2
    python3 -c '
import json
for i in range(2000):
    print(json.dumps({"id": str(i), "text": "record %d: Alice met Bob in Paris, it was %s" % (i, ["great", "awful"][i % 2])}))
' > build/gpu-pipe.in
    check "nlpd pipe, kernels.backend = cuda (sentiment + ner, 2000 records, 4 threads)" "$t" sh -c \
        "\"$BIN/nlpd\" pipe -c build/gpu-pipe.conf < build/gpu-pipe.in > build/gpu-pipe.out 2> build/gpu-pipe.err &&
         test \$(grep -c '\"sentiment\":{' build/gpu-pipe.out) -eq 2000 && grep -q 'backend cuda' build/gpu-pipe.err"
    grep -E 'kernels:' build/gpu-pipe.err | head -n 2 | cut -c1-220 | sed 's/^/       /' | tee -a "$SUM"
    tail -n 3 build/gpu-pipe.err | cut -c1-200 | sed 's/^/       /' >> "$SUM"
fi

# --- the op tests under compute-sanitizer memcheck (out-of-bounds and misaligned accesses in our kernels) ---
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null)
if ! skipped sanitizer && [ -n "$SAN" ] && t=$(box 150 60 "compute-sanitizer"); then
    echo "== compute-sanitizer memcheck (box $t s)" >> "$LOG"
    t1=$(date +%s)
    NLPD_CUDA_OPS_ONLY=1 timeout -k 10 "$t" "$SAN" --tool memcheck --print-limit 20 "$TESTS/test_cuda_ops" > "$STEP" 2>&1
    rc=$?
    cat "$STEP" >> "$LOG"
    if grep -qE 'Invalid __(global|shared|local)__|[Oo]ut of bounds|[Mm]isaligned|Hardware exception|unspecified launch failure|illegal address' "$STEP"; then
        say "FAILED compute-sanitizer memcheck: memory errors in the kernels ($(($(date +%s) - t1)) s)"
        grep -m 12 -E -A 3 'Invalid __|[Oo]ut of bounds|[Mm]isaligned|Hardware exception' "$STEP" | cut -c1-200 |
            sed 's/^/       /' | tee -a "$SUM"
        status=1
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        say "note   compute-sanitizer memcheck did not finish in $t s (no memory error seen before)"
    elif grep -q 'ERROR SUMMARY' "$STEP" && grep -qE ' 0 failed' "$STEP"; then
        say "ok     compute-sanitizer memcheck, op tests ($(($(date +%s) - t1)) s; $(grep -m1 'ERROR SUMMARY' "$STEP" | cut -c1-80), the deliberate out-of-memory calls included)"
    else
        say "note   compute-sanitizer could not check here (exit $rc): $(grep -v '^=' "$STEP" | tail -n 1 | cut -c1-150); $(grep -m1 -E 'ERROR SUMMARY|not supported|error' "$STEP" | cut -c1-150)"
    fi
fi

# --- benchmark: BERT-base, seq 128, batch 1/32/128, fp32 and fp16 (what time is left) ---
if ! skipped bench && t=$(box 300 90 "bench/encoder"); then
    check "bench/encoder --backend cuda" "$t" env BENCH_BACKEND=cuda BENCH_BIN="$BENCH" RUNS="${RUNS:-5}" \
        BENCH_DTYPES="fp32 fp16" BATCHES="1 32 128" sh bench/encoder/run.sh
    sed -n '/^encoder /,$p' "$STEP" | tee -a "$SUM"
fi

finished=1
exit $status
