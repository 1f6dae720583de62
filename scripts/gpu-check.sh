#!/bin/bash
# The CUDA backend's checks on a GPU machine, in one run (about 5-8 minutes on an H100/H200), with a summary in
# $OUT/gpu-check.txt (or build/gpu-check.txt when OUT is unset). Run from the repository root:
#   scripts/gpu-check.sh            build (or use the carried bundle), then: device info, test_cuda_ops (every op
#                                   vs the CPU, error paths, fixture parity fp32/fp16/bf16), test_encoder on the
#                                   GPU (auto), nlpd infer --backend cuda, nlpd pipe with kernels.backend = "cuda"
#                                   (sentiment + ner stages), the encoder benchmark (BERT-base, seq 128, batch
#                                   1/32/128, fp32 and fp16, PyTorch on the same GPU when it is there)
#   scripts/gpu-check.sh --pack     on a build machine without a GPU: build, and put the binaries and the
#                                   non-system shared libraries they need into .gpu-bundle/ (ignored by git), for a
#                                   GPU machine that lacks the Debian -dev packages `make` needs. Carry .gpu-bundle
#                                   there (about 50 MB); the check then rebuilds only libnlpd_cuda.so with its nvcc.
set -u
cd "$(dirname "$0")/.." || exit 2
BUNDLE=.gpu-bundle

if [ "${1:-}" = "--pack" ]; then
    make -j"$(nproc)" all > /dev/null || exit 1
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" || exit 1
    for b in build/nlpd build/tests/test_cuda_ops build/tests/test_encoder build/bench/bench_encoder; do
        strip -o "$BUNDLE/bin/$(basename "$b")" "$b" || exit 1
    done
    [ -f build/libnlpd_cuda.so ] && cp build/libnlpd_cuda.so "$BUNDLE/bin/"
    # every library the binaries need except the C/C++ runtime, which the GPU machine has (a newer glibc)
    ldd "$BUNDLE"/bin/nlpd "$BUNDLE"/bin/test_* "$BUNDLE"/bin/bench_encoder | awk '$3 ~ /^\// {print $3}' | sort -u |
        grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' |
        while read -r l; do cp -L "$l" "$BUNDLE/lib/"; done
    ex=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$ex")" &&
        { grep -qxF "/$BUNDLE/" "$ex" 2> /dev/null || echo "/$BUNDLE/" >> "$ex"; }
    du -sh "$BUNDLE"
    exit 0
fi

DEST=${OUT:-build}
mkdir -p "$DEST" build
SUM=$DEST/gpu-check.txt
LOG=$DEST/gpu-check.log
: > "$SUM"
: > "$LOG"
say() { echo "$*" | tee -a "$SUM"; }
status=0
# check NAME CMD...: runs CMD (output to the log and the terminal), records ok / FAILED with its last lines
check() {
    local name=$1 t0 rc
    shift
    t0=$(date +%s)
    echo "== $name: $*" >> "$LOG"
    "$@" > "$DEST/step.out" 2>&1
    rc=$?
    cat "$DEST/step.out" >> "$LOG"
    if [ $rc -eq 0 ]; then
        say "ok     $name ($(($(date +%s) - t0)) s)"
    else
        say "FAILED $name (exit $rc, $(($(date +%s) - t0)) s)"
        tail -n 15 "$DEST/step.out" | sed 's/^/       /' | tee -a "$SUM"
        status=1
    fi
}

say "# nlpd CUDA backend check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2> /dev/null)"
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | head -n 2)"
say "nvcc: $(nvcc --version 2> /dev/null | tail -n 1 || /usr/local/cuda/bin/nvcc --version | tail -n 1)"

# --- build: the whole tree when its dependencies are here, else the carried bundle plus a fresh .so ---
BIN=build
TESTS=build/tests
BENCH=build/bench/bench_encoder
if make -j16 all > "$DEST/build.out" 2>&1; then
    say "ok     make all"
    export NLPD_LIBDIR=$PWD/build
elif [ -x "$BUNDLE/bin/nlpd" ]; then
    say "note   make all failed here ($(grep -m1 -iE 'error|No package' "$DEST/build.out" | cut -c1-150)); using $BUNDLE"
    check "make cuda (libnlpd_cuda.so with this machine's nvcc)" make -j16 cuda
    export LD_LIBRARY_PATH=$PWD/$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export NLPD_LIBDIR=$PWD/build
    [ -f build/libnlpd_cuda.so ] || NLPD_LIBDIR=$PWD/$BUNDLE/bin
    BIN=$BUNDLE/bin
    TESTS=$BUNDLE/bin
    BENCH=$BUNDLE/bin/bench_encoder
else
    say "FAILED make all, and no $BUNDLE (run scripts/gpu-check.sh --pack where the build works, carry it)"
    tail -n 20 "$DEST/build.out" | tee -a "$SUM"
    exit 1
fi
say "libnlpd_cuda.so: $NLPD_LIBDIR; readelf NEEDED of nlpd: $(readelf -d "$BIN/nlpd" | grep -c 'NEEDED.*\(cuda\|cublas\)') CUDA libraries (want 0)"

# --- ops and fixtures ---
check "test_cuda_ops (every op vs CPU, errors, fp16/bf16, fixture parity)" timeout 300 "$TESTS/test_cuda_ops"
grep -E '^(cuda:|model |auto picked|skipped)|passed, .* failed' "$DEST/step.out" | sed 's/^/       /' | tee -a "$SUM"
grep -q '^skipped' "$DEST/step.out" && { say "FAILED the CUDA tests skipped on a GPU machine"; status=1; }
check "test_encoder on the GPU (backend auto)" timeout 300 "$TESTS/test_encoder"
grep -E 'max \|diff\||passed' "$DEST/step.out" | sed 's/^/       /' | tee -a "$SUM"

# --- nlpd infer ---
printf '%s\n' '{"text": "the service was great"}' '{"text": "terrible, never again", "text_pair": "ok"}' > build/gpu-in.jsonl
for dt in fp32 fp16 bf16; do
    check "nlpd infer --backend cuda --dtype $dt" timeout 120 "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls \
        --backend cuda --dtype "$dt" < build/gpu-in.jsonl
    grep -E 'kernels:|logits' "$DEST/step.out" | head -n 3 | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
done
"$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cpu < build/gpu-in.jsonl > build/gpu-cpu.out 2> /dev/null
"$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cuda < build/gpu-in.jsonl > build/gpu-cuda.out 2> /dev/null
check "nlpd infer: cuda fp32 logits = cpu logits within 1e-4" python3 - build/gpu-cpu.out build/gpu-cuda.out << 'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 2, (len(a), len(b))
d = max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p["logits"], q["logits"]))
print("max |diff|", d)
assert d <= 1e-4, d
PY

# --- nlpd pipe with kernels.backend = "cuda": an HF sentiment stage and an NER stage ---
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
check "nlpd pipe, kernels.backend = cuda (sentiment + ner, 2000 records)" timeout 180 sh -c \
    "\"$BIN/nlpd\" pipe -c build/gpu-pipe.conf < build/gpu-pipe.in > build/gpu-pipe.out 2> build/gpu-pipe.err &&
     test \$(grep -c '\"sentiment\":{' build/gpu-pipe.out) -eq 2000 && grep -q 'backend cuda' build/gpu-pipe.err"
grep -E 'kernels:' build/gpu-pipe.err | head -n 2 | cut -c1-220 | sed 's/^/       /' | tee -a "$SUM"
tail -n 3 build/gpu-pipe.err | cut -c1-200 | sed 's/^/       /' >> "$SUM"

# --- benchmark: BERT-base, seq 128, batch 1/32/128, fp32 and fp16 ---
check "bench/encoder --backend cuda" timeout 420 env BENCH_BACKEND=cuda BENCH_BIN="$BENCH" RUNS=${RUNS:-5} \
    BENCH_DTYPES="fp32 fp16" BATCHES="1 32 128" sh bench/encoder/run.sh
sed -n '/^encoder /,$p' "$DEST/step.out" | tee -a "$SUM"

say "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL) (full log: $LOG)"
exit $status
