#!/bin/bash
# The CUDA backend's checks on a GPU machine, in one run of at most GPU_CHECK_BUDGET seconds (default 300: a
# machine start plus two tries fit 15 minutes of device time), with a summary in $OUT/gpu-check.txt
# (build/gpu-check.txt when OUT is unset) that ends with one table (engine, variant, dtype, batch, seq, latency,
# seq/s, max |dlogit| vs the CPU, result) and an "overall: PASS|FAIL" line; next to it the full log
# (gpu-check.log), the table alone (gpu-table.txt) and the benchmark's raw rows (gpu-bench.jsonl). Every step fails
# when its output is missing (no summary line, "skipped", a missing or failed benchmark row, a sanitizer that could
# not check). Run from anywhere in the repository:
#   scripts/gpu-check.sh            first what this machine has (make, cc, nvcc, libcublas, the build's -dev
#                                   packages, a carried bundle) and the plan it picks; then build (or use the
#                                   bundle), then, each step time-boxed and failed (never skipped silently) when
#                                   the budget cannot hold it: test_cuda_ops (every op vs the CPU, error paths,
#                                   fp16/bf16, chunked paths, fixture parity) and every other test_cuda_* binary;
#                                   nlpd infer --backend cuda (fp32/fp16/bf16 against the CPU's logits: strict
#                                   fp32 within 1e-4); test_encoder on the GPU (auto); the encoder benchmark
#                                   (bench/encoder/gpu.sh: BERT-base, seq 128, batch 1/32/128, fp16/bf16/fp32-tf32,
#                                   PyTorch on the same GPU when it is there, the A/B rows of the CUDA switches,
#                                   every row against nlpd's CPU fp32 logits; its model and CPU reference are made
#                                   in the background from the start); nlpd pipe with kernels.backend = "cuda";
#                                   the op tests under compute-sanitizer memcheck
#   scripts/gpu-check.sh --dry-run  what the machine has and the plan, nothing run (exit 0 when the plan can work)
#   scripts/gpu-check.sh --pack     on a build machine without a GPU: build, and put the binaries, the non-system
#                                   shared libraries they need, a prebuilt libnlpd_cuda.so and its cudart into
#                                   .gpu-bundle/bundle.tar.gz (in .gitignore; the check unpacks it), for a GPU
#                                   machine that lacks the Debian -dev packages `make` needs. Refuses a bundle that with the tree exceeds 64 MiB (what
#                                   a device call carries). On the GPU machine the prebuilt .so is used when its
#                                   libraries resolve there (libcublas found in the CUDA toolkit or a pip
#                                   nvidia-cublas), else libnlpd_cuda.so is rebuilt with that machine's nvcc.
#                                   Pack again after any change (the bundle's binaries are what runs).
# Environment: GPU_CHECK_BUDGET (seconds, default 300), RUNS (timed benchmark runs a row, default 20, after WARMUP
# = 3), BENCH_DTYPES, BATCHES, BENCH_AB, ROW_TIMEOUT (45 s; see bench/encoder/gpu.sh), GPU_CHECK_SKIP (words
# among: sanitizer bench pipe encoder infer) to leave steps out (reported as "skip", by request),
# GPU_CHECK_BUNDLE (default .gpu-bundle), GPU_CHECK_NVCC (the nvcc to use; empty: none), GPU_CHECK_LIBDIR (below).
set -u
cd "$(dirname "$0")/.." || exit 2
BUNDLE=${GPU_CHECK_BUNDLE:-.gpu-bundle}
CARRY_MAX=$((64 << 20))
# the other CUDA test binaries (tests/unit/test_cuda_*.c besides test_cuda_ops, e.g. test_cuda_graph): packed, and
# each run on the GPU as a step of its own
EXTRA_TESTS=${GPU_CHECK_EXTRA_TESTS-$(for f in tests/unit/test_cuda_*.c; do
    [ -f "$f" ] && [ "$f" != tests/unit/test_cuda_ops.c ] && basename "$f" .c; done)}
if [ -n "${GPU_CHECK_NVCC+set}" ]; then
    NVCC_BIN=$GPU_CHECK_NVCC
else
    NVCC_BIN=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
fi

if [ "${1:-}" = "--pack" ]; then
    make -j"$(nproc)" all > /dev/null || exit 1
    [ -f build/libnlpd_cuda.so ] || { echo "gpu-check --pack: no build/libnlpd_cuda.so (nvcc missing here?)" >&2; exit 1; }
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" "$BUNDLE/cuda" || exit 1
    for b in build/nlpd build/tests/test_cuda_ops build/tests/test_encoder build/bench/bench_encoder \
        $(for x in $EXTRA_TESTS; do echo "build/tests/$x"; done); do
        strip -o "$BUNDLE/bin/$(basename "$b")" "$b" || exit 1
    done
    # the prebuilt .so lives apart from the binaries: nlpd looks next to its executable first, and the check picks
    # this copy or a fresh build explicitly (NLPD_LIBDIR)
    cp build/libnlpd_cuda.so "$BUNDLE/cuda/" || exit 1
    # every library the binaries need except the C/C++ runtime, which the GPU machine has (glibc >= 2.34 needed);
    # cudart (small) travels for the prebuilt .so, cuBLAS (~600 MB) cannot: the GPU machine must have it
    { ldd "$BUNDLE"/bin/nlpd "$BUNDLE"/bin/test_* "$BUNDLE"/bin/bench_encoder | awk '$3 ~ /^\// {print $3}'
      ldd "$BUNDLE/cuda/libnlpd_cuda.so" | awk '$3 ~ /^\// && $1 ~ /^libcudart/ {print $3}'; } | sort -u |
        grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' |
        while read -r l; do cp -L "$l" "$BUNDLE/lib/" || exit 1; done || exit 1
    git rev-parse HEAD > "$BUNDLE/commit" 2> /dev/null
    # the sources the binaries were built from: the GPU machine (no .git there) checks them with sha256sum -c
    git ls-files -z | xargs -0 sha256sum > "$BUNDLE/sources.sha256" || exit 1
    # compressed (oneDNN and OpenBLAS alone are ~75 MB), unpacked by the check on the GPU machine
    tar -czf "$BUNDLE/bundle.tar.gz" -C "$BUNDLE" bin lib cuda && rm -rf "$BUNDLE/bin" "$BUNDLE/lib" "$BUNDLE/cuda" || exit 1
    # what a device call carries: tracked and unignored untracked files, plus the bundle
    tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2> /dev/null | awk '{s += $1} END {print s + 0}')
    bundle=$(du -sb "$BUNDLE" | cut -f1)
    echo "bundle $((bundle >> 20)) MiB + tree $((tree >> 20)) MiB = $(((bundle + tree) >> 20)) MiB (limit 64 MiB)"
    if [ $((bundle + tree)) -gt $CARRY_MAX ]; then
        echo "gpu-check --pack: too large to carry" >&2
        exit 1
    fi
    exit 0
fi
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
# a packed bundle travels compressed: unpack it once (a dry run too, so that it can read the prebuilt .so's needs)
if [ -f "$BUNDLE/bundle.tar.gz" ] && [ ! -x "$BUNDLE/bin/nlpd" ]; then
    tar -xzf "$BUNDLE/bundle.tar.gz" -C "$BUNDLE" || echo "gpu-check: cannot unpack $BUNDLE/bundle.tar.gz" >&2
fi

BUDGET=${GPU_CHECK_BUDGET:-300}
T0=$(date +%s)
DEST=${OUT:-build}
mkdir -p "$DEST" build
SUM=$DEST/gpu-check.txt
LOG=$DEST/gpu-check.log
STEP=build/gpu-step.out
TABLE=$DEST/gpu-table.txt
: > "$SUM"
: > "$LOG"
rm -f "$TABLE"
say() { echo "$*" | tee -a "$SUM"; }
status=0
finished=0
PREP_PID= # the benchmark's model and CPU reference, made in the background
# the summary's end, however the script ends (a failed build, a signal, the end): the table, then the verdict
on_exit() {
    [ -n "$PREP_PID" ] && kill "$PREP_PID" 2> /dev/null
    if [ $finished = 0 ]; then
        say "FAILED gpu-check.sh stopped early ($(($(date +%s) - T0)) s in)"
        status=1
    fi
    if [ $DRY = 0 ]; then
        if [ -s "$TABLE" ]; then
            cat "$TABLE" | tee -a "$SUM"
        else
            say "| engine | variant | dtype | batch | seq | latency ms | seq/s | max \\|dlogit\\| | rel | result |"
            say "| (no benchmark rows: the benchmark did not run or failed) |"
        fi
    fi
    say "overall: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(($(date +%s) - T0)) s (full log: $LOG)"
}
trap on_exit EXIT
trap 'exit 1' INT TERM HUP
left() { echo $((BUDGET - ($(date +%s) - T0))); }
skipped() { case " ${GPU_CHECK_SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }
fail() {
    say "FAILED $*"
    status=1
}

# box SECONDS MIN NAME: sets t to the time a step may take, or fails (a FAILED line: a check that did not run did
# not pass) when fewer than MIN seconds are left; not called in a subshell, so the failure counts
box() {
    local want=$1 min=$2 name=$3 l
    l=$(($(left) - 10))
    if [ "$l" -lt "$min" ]; then
        fail "$name: not run, ${l} s of the budget left and it needs ${min}"
        return 1
    fi
    [ "$want" -gt "$l" ] && want=$l
    t=$want
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
        fail "$name (exit $rc, $(($(date +%s) - t0)) s)"
        tail -n 15 "$STEP" | cut -c1-300 | sed 's/^/       /' | tee -a "$SUM"
    fi
    return 0
}

# summary_ok: the step's output has a test summary with no failure (a test that printed nothing did not pass)
summary_ok() {
    grep -qE '^[0-9]+ passed, 0 failed$' "$STEP" && ! grep -qE '^[0-9]+ passed, [1-9][0-9]* failed$' "$STEP"
}

# --- what this machine has, and the plan ---
find_cublas() { # the directory holding libcublas.so.N (N: the major the .so wants), or nothing
    local want=$1 d
    for d in ${CUDA_HOME:+$CUDA_HOME/lib64} ${NVCC_BIN:+$(dirname "$(dirname "$NVCC_BIN")")/lib64} /usr/local/cuda/lib64 \
        /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu $(python3 -c '
import glob, site, sys
for p in site.getsitepackages() + [site.getusersitepackages()]:
    for d in glob.glob(p + "/nvidia/cu*/lib") + glob.glob(p + "/nvidia/cublas/lib"):
        print(d)' 2> /dev/null); do
        [ -e "$d/$want" ] && { echo "$d"; return 0; }
    done
    ldconfig -p 2> /dev/null | awk -v w="$want" '$1 == w {print $NF; exit}' | xargs -r dirname
}
say "# nlpd CUDA backend check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2> /dev/null), budget ${BUDGET} s"
if command -v nvidia-smi > /dev/null 2>&1; then
    say "gpu: $( (nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || echo "nvidia-smi failed") 2>&1 | head -n 2)"
else
    say "gpu: no nvidia-smi here"
fi
have() { command -v "$1" > /dev/null 2>&1 && echo yes || echo no; }
DEPS=no
pkg-config --exists libconfig jansson libutf8proc libcrypto openblas rdkafka libevent avro-c hiredis libsystemd 2> /dev/null && DEPS=yes
NVCC_VER=
[ -n "$NVCC_BIN" ] && NVCC_VER=$("$NVCC_BIN" --version 2> /dev/null | grep -oE 'release [0-9.]+' | head -n 1)
[ -n "$NVCC_BIN" ] && [ -z "$NVCC_VER" ] && NVCC_BIN=
PRE=$BUNDLE/cuda/libnlpd_cuda.so
PRE_CUBLAS=
[ -f "$PRE" ] && PRE_CUBLAS=$(readelf -d "$PRE" 2> /dev/null | grep -oE 'libcublas\.so\.[0-9]+' | head -n 1)
# without binutils there: the soname's string in the .so itself
[ -f "$PRE" ] && [ -z "$PRE_CUBLAS" ] && PRE_CUBLAS=$(grep -aoE 'libcublas\.so\.[0-9]+' "$PRE" | head -n 1)
CUBLAS_DIR=
[ -n "$PRE_CUBLAS" ] && CUBLAS_DIR=$(find_cublas "$PRE_CUBLAS")
NVCC_SAY=no
[ -n "$NVCC_BIN" ] && NVCC_SAY="$NVCC_BIN ($NVCC_VER)"
BUNDLE_SAY=no
FRESH=no
if [ -x "$BUNDLE/bin/nlpd" ]; then
    # fresh: every tracked file as it was when packed (a stale bundle would test other code than this tree's)
    stale=$(sha256sum --quiet -c "$BUNDLE/sources.sha256" 2> /dev/null | grep -c ': FAILED')
    [ -f "$BUNDLE/sources.sha256" ] && [ "$stale" = 0 ] && FRESH=yes
    if [ ! -f "$BUNDLE/sources.sha256" ]; then
        why="STALE: no sources.sha256 (pack again)"
    elif [ $FRESH = yes ]; then
        why="sources unchanged"
    else
        why="STALE: $stale files differ from the packed sources"
    fi
    BUNDLE_SAY="yes (packed at $(cut -c1-10 "$BUNDLE/commit" 2> /dev/null), $why)"
fi
TREE_OK=no
[ "$(have make)" = yes ] && [ "$(have cc)" = yes ] && [ $DEPS = yes ] && [ -n "$NVCC_BIN" ] && TREE_OK=yes
say "machine: make $(have make), cc $(have cc), nvcc $NVCC_SAY, build -dev packages $DEPS, bundle $BUNDLE_SAY, prebuilt .so needs ${PRE_CUBLAS:-(none packed)}: ${CUBLAS_DIR:-not found}"
# plan: a fresh bundle with its prebuilt .so (its cuBLAS found here: nothing to build), else the whole tree (make +
# cc + -dev packages + nvcc), else a fresh bundle with a .so built by this machine's nvcc (make needed)
if [ $FRESH = yes ] && [ -n "$CUBLAS_DIR" ]; then
    PLAN=prebuilt
elif [ $TREE_OK = yes ]; then
    PLAN=tree
elif [ $FRESH = yes ] && [ -n "$NVCC_BIN" ] && [ "$(have make)" = yes ]; then
    PLAN=rebuild
else
    PLAN=none
fi
case $PLAN in
tree) say "plan:  make all here (the tree's binaries and libnlpd_cuda.so)" ;;
prebuilt) say "plan:  the bundle's binaries and prebuilt libnlpd_cuda.so, cuBLAS from $CUBLAS_DIR" ;;
rebuild) say "plan:  the bundle's binaries, libnlpd_cuda.so rebuilt with $NVCC_BIN" ;;
none) fail "no way to run here: no complete build toolchain, and no usable $BUNDLE (run scripts/gpu-check.sh --pack where the build works, after the last change, and carry $BUNDLE; the prebuilt .so needs ${PRE_CUBLAS:-libcublas} or nvcc + make here)" ;;
esac
if [ $DRY = 1 ]; then
    steps="test_cuda_ops${EXTRA_TESTS:+ $(echo $EXTRA_TESTS)}"
    for w in infer encoder bench pipe sanitizer; do skipped $w || steps="$steps $w"; done
    say "steps: $steps (budget ${BUDGET} s)"
    finished=1
    exit $status
fi
[ $PLAN = none ] && exit 1

# --- build ---
BIN=build
TESTS=build/tests
BENCH=build/bench/bench_encoder
if [ $PLAN = tree ]; then
    box 240 60 "make all" || exit 1
    check "make all" "$t" make -j"$(nproc)" all
    [ $status = 0 ] || exit 1
    export NLPD_LIBDIR=$PWD/build
else
    BUNDLE=$(cd "$BUNDLE" && pwd) || exit 1
    BIN=$BUNDLE/bin
    TESTS=$BUNDLE/bin
    BENCH=$BUNDLE/bin/bench_encoder
    export LD_LIBRARY_PATH=$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if [ $PLAN = prebuilt ]; then
        export LD_LIBRARY_PATH=$CUBLAS_DIR:$LD_LIBRARY_PATH
        export NLPD_LIBDIR=$BUNDLE/cuda
    else
        rm -f build/libnlpd_cuda.so
        box 240 30 "make cuda" || exit 1
        check "make cuda (libnlpd_cuda.so with this machine's nvcc)" "$t" make -j"$(nproc)" NVCC="$NVCC_BIN" cuda
        [ -f build/libnlpd_cuda.so ] || { fail "no libnlpd_cuda.so: nothing to check"; exit 1; }
        export NLPD_LIBDIR=$PWD/build
    fi
    missing=$(ldd "$BIN/nlpd" "$TESTS/test_cuda_ops" "$NLPD_LIBDIR/libnlpd_cuda.so" 2>&1 | grep 'not found' | sort -u | tr -s ' \t' ' ' | head -n 5)
    if [ -n "$missing" ]; then
        fail "libraries missing here: $missing"
        exit 1
    fi
fi
# GPU_CHECK_LIBDIR: another libnlpd_cuda.so to check (build/emul with NLPD_CUDA_EMULATOR=1: a rehearsal of this
# script on a machine without a GPU, on the CUDA host emulator)
if [ -n "${GPU_CHECK_LIBDIR:-}" ]; then
    NLPD_LIBDIR=$(cd "$GPU_CHECK_LIBDIR" && pwd) || { fail "GPU_CHECK_LIBDIR $GPU_CHECK_LIBDIR: no such directory"; exit 1; }
    export NLPD_LIBDIR
fi
say "libnlpd_cuda.so: $NLPD_LIBDIR; $(readelf -d "$NLPD_LIBDIR/libnlpd_cuda.so" 2> /dev/null | grep -oE 'lib(cudart|cublas)[^]]*' | tr '\n' ' ')"
say "NEEDED CUDA libraries of nlpd: $(readelf -d "$BIN/nlpd" 2> /dev/null | grep -c 'NEEDED.*\(cuda\|cublas\)') (want 0)"

# the benchmark's random-weight model (numpy) and its CPU fp32 reference (half the cores) need no GPU: made now,
# while the tests below use it, and waited for by the benchmark step
export BENCH_OUT=${BENCH_OUT:-build/bench-encoder}
rm -f "$BENCH_OUT/plan.jsonl" "$BENCH_OUT/rows.jsonl" # an earlier try's rows are not this one's
if ! skipped bench; then
    BENCH_PHASE=prep BENCH_BIN="$BENCH" REF_THREADS=${REF_THREADS:-$((($(nproc) + 1) / 2))} \
        timeout -k 5 "$BUDGET" sh bench/encoder/gpu.sh > build/gpu-bench-prep.log 2>&1 &
    PREP_PID=$!
fi

# --- ops and fixtures: the most important step ---
AUTO_CUDA=0 # kernels.backend = "auto" picks CUDA here (test_cuda_ops says): what test_encoder relies on
if box 120 30 "test_cuda_ops"; then
    check "test_cuda_ops (every op vs CPU, errors, fp16/bf16, chunking, fixture parity)" "$t" "$TESTS/test_cuda_ops"
    grep -E '^(cuda:|model |auto picked|skipped)|passed, .* failed|^FAIL|^  ' "$STEP" | head -n 50 | cut -c1-250 |
        sed 's/^/       /' | tee -a "$SUM"
    grep -q '^skipped' "$STEP" && fail "test_cuda_ops skipped the CUDA tests on a GPU machine"
    grep -q '^auto picked cuda' "$STEP" && AUTO_CUDA=1
    summary_ok || fail "test_cuda_ops: no 'N passed, 0 failed' line"
    # issue 20 items 4 and 6: a binary without them (or a run that left them out) must not pass
    grep -q '^  threads (device .*per thread' "$STEP" ||
        fail "test_cuda_ops: no 'threads (device ..., per thread)' line: the per-thread streams were not tested on the GPU"
    [ "$(grep -c '^  topk .*columns equal' "$STEP")" -ge 5 ] ||
        fail "test_cuda_ops: fewer than 5 'topk ... columns equal' lines: the device top-k was not tested"
fi
for x in $EXTRA_TESTS; do
    if [ ! -x "$TESTS/$x" ]; then
        fail "$x: no $TESTS/$x (tests/unit/$x.c is in the tree: pack again, or make all)"
    elif box 60 20 "$x"; then
        check "$x on the GPU" "$t" "$TESTS/$x"
        grep -E '^skipped|passed, .* failed|^FAIL' "$STEP" | head -n 12 | cut -c1-250 | sed 's/^/       /' | tee -a "$SUM"
        grep -q '^skipped' "$STEP" && fail "$x skipped its CUDA tests on a GPU machine"
        summary_ok || fail "$x: no 'N passed, 0 failed' line"
    fi
done

# --- nlpd infer ---
if ! skipped infer; then
    printf '%s\n' '{"text": "the service was great"}' '{"text": "terrible, never again", "text_pair": "ok"}' > build/gpu-in.jsonl
    for dt in fp32 fp16 bf16; do
        box 30 10 "nlpd infer $dt" || break
        check "nlpd infer --backend cuda --dtype $dt" "$t" "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls \
            --backend cuda --dtype "$dt" < build/gpu-in.jsonl
        grep -E 'kernels:|logits' "$STEP" | head -n 3 | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
        [ "$(grep -c '"logits"' "$STEP")" -eq 2 ] || fail "nlpd infer $dt: not 2 results with logits"
        grep -q 'backend cuda' "$STEP" || fail "nlpd infer $dt: no 'backend cuda' line (another backend ran?)"
        grep '"logits"' "$STEP" > "build/gpu-infer-$dt.out"
    done
    if box 60 20 "infer parity"; then
        timeout 60 "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cpu < build/gpu-in.jsonl \
            > build/gpu-cpu.out 2> /dev/null
        # strict fp32: TF32 (the default) rounds inputs to 10 mantissa bits, far from 1e-4
        NLPD_CUDA_MATH=strict timeout 60 "$BIN/nlpd" infer --model tests/fixtures/hf-tiny/bert-seq-cls --backend cuda \
            < build/gpu-in.jsonl > build/gpu-infer-fp32-strict.out 2> /dev/null
        # strict fp32 must be within 1e-4 of the CPU; the other dtypes' figures are reported against issue 20's 1e-3
        # (relative to the max |logit|), and fail only beyond the benchmark's gross-error guard (32 unit roundoffs)
        check "nlpd infer: cuda logits vs cpu fp32 (strict fp32 within 1e-4)" "$t" python3 - build/gpu-cpu.out \
            build/gpu-infer-fp32-strict.out build/gpu-infer-fp32.out build/gpu-infer-fp16.out build/gpu-infer-bf16.out << 'PY'
import json, math, sys
def load(p):
    try:
        return [json.loads(l)["logits"] for l in open(p) if l.startswith("{")]
    except (OSError, ValueError, KeyError) as e:
        return str(e)
ref = load(sys.argv[1])
assert isinstance(ref, list) and len(ref) == 2, f"cpu: {ref}"
top = max(abs(x) for r in ref for x in r)
bad = []
for name, path, limit in (("fp32-strict", sys.argv[2], 1e-4), ("fp32-tf32", sys.argv[3], 32 * 2**-11 * top),
                          ("fp16", sys.argv[4], 32 * 2**-11 * top), ("bf16", sys.argv[5], 32 * 2**-8 * top)):
    got = load(path)
    if not isinstance(got, list) or len(got) != 2 or any(len(g) != len(r) for g, r in zip(got, ref)):
        bad.append(f"{name}: no 2 results with logits ({got if isinstance(got, str) else len(got)})")
        continue
    d = max(abs(x - y) for g, r in zip(got, ref) for x, y in zip(g, r))
    d = d if math.isfinite(d) else math.inf
    target = "" if name == "fp32-strict" else f", issue 20 target 1e-3: {'met' if d <= 1e-3 * top else 'NOT met'}"
    print(f"parity {name}: max |dlogit| {d:.3g}, relative {d / top:.2g}{target}")
    if not d <= limit:
        bad.append(f"{name}: max |dlogit| {d:.3g} > {limit:.3g}")
print(f"(hf-tiny bert-seq-cls, 2 inputs, max |logit| {top:.3g})")
assert not bad, "; ".join(bad)
PY
        grep -E '^parity|^\(hf-tiny' "$STEP" | sed 's/^/       /' | tee -a "$SUM"
    fi
fi

# --- the encoder tests with backend auto (the GPU here) ---
if ! skipped encoder && box 90 20 "test_encoder"; then
    check "test_encoder on the GPU (backend auto, strict fp32)" "$t" env NLPD_CUDA_MATH=strict "$TESTS/test_encoder"
    grep -E 'max \|diff\||passed' "$STEP" | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
    summary_ok || fail "test_encoder: no 'N passed, 0 failed' line"
    [ $AUTO_CUDA = 1 ] || fail "test_encoder: backend auto did not pick CUDA in test_cuda_ops, so it ran on the CPU"
fi

# --- benchmark (bench/encoder/gpu.sh): BERT-base, seq 128, nlpd fp16/bf16/fp32-tf32 at batch 1/32/128, PyTorch's
# rows when it has CUDA here, the A/B rows of the CUDA switches; before pipe and the sanitizer (the figures matter
# more than a memcheck that may not finish). A row that fails, times out or never runs is a FAIL row of the table. ---
if ! skipped bench && box 180 60 "bench/encoder"; then
    end=$(($(date +%s) + t))
    while kill -0 "$PREP_PID" 2> /dev/null && [ "$(date +%s)" -lt $end ]; do sleep 1; done
    { echo "== bench/encoder prep (model, CPU reference)"; cat build/gpu-bench-prep.log; } >> "$LOG"
    if kill -0 "$PREP_PID" 2> /dev/null; then
        kill "$PREP_PID"
        fail "bench/encoder: the model and the CPU reference were not ready within the step's $t s"
    elif ! wait "$PREP_PID"; then
        fail "bench/encoder: the model or the CPU reference failed: $(tail -n 1 build/gpu-bench-prep.log | cut -c1-200)"
    elif [ $((end - $(date +%s))) -lt 20 ]; then
        fail "bench/encoder rows: not run, $((end - $(date +%s))) s of the step left after the model and reference"
    else
        check "bench/encoder rows (nlpd, torch, A/B)" "$((end - $(date +%s)))" env BENCH_PHASE=rows BENCH_BIN="$BENCH" \
            RUNS="${RUNS:-20}" WARMUP="${WARMUP:-3}" ROW_TIMEOUT="${ROW_TIMEOUT:-45}" sh bench/encoder/gpu.sh
        grep -E '^   PyTorch exited' "$STEP" | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
    fi
    PREP_PID=
    # the table from whatever rows exist: a planned row that is missing is a FAIL row in it
    if [ -s "$BENCH_OUT/plan.jsonl" ]; then
        BENCH_PHASE=table BENCH_TABLE="$TABLE.tmp" sh bench/encoder/gpu.sh > "$STEP" 2>&1 ||
            fail "bench/encoder: $(grep -m1 '^bench rows' "$STEP" || tail -n 1 "$STEP" | cut -c1-200)"
        [ -s "$TABLE.tmp" ] && mv "$TABLE.tmp" "$TABLE"
        cat "$STEP" >> "$LOG"
        cp "$BENCH_OUT/rows.jsonl" "$DEST/gpu-bench.jsonl" 2> /dev/null
    fi
fi

# --- nlpd pipe with kernels.backend = "cuda": an HF sentiment stage and an NER stage ---
if ! skipped pipe && box 90 20 "nlpd pipe"; then
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
# only a run that reports "ERROR SUMMARY: 0 errors" and the tests' clean summary passes: a sanitizer that is
# missing, refuses the device ("Device not supported"), times out or lets the tests skip has checked nothing
if ! skipped sanitizer; then
    SAN=$(command -v compute-sanitizer || { [ -n "$NVCC_BIN" ] && ls "$(dirname "$NVCC_BIN")/compute-sanitizer" 2> /dev/null; })
    if [ -z "$SAN" ]; then
        fail "compute-sanitizer not found (GPU_CHECK_SKIP=sanitizer leaves it out)"
    elif box 120 40 "compute-sanitizer"; then
        echo "== compute-sanitizer memcheck (box $t s)" >> "$LOG"
        t1=$(date +%s)
        NLPD_CUDA_OPS_ONLY=1 timeout -k 10 "$t" "$SAN" --tool memcheck --print-limit 20 "$TESTS/test_cuda_ops" > "$STEP" 2>&1
        rc=$?
        cat "$STEP" >> "$LOG"
        took=$(($(date +%s) - t1))
        if grep -qE 'Invalid __(global|shared|local)__|[Oo]ut of bounds|[Mm]isaligned|Hardware exception|unspecified launch failure|illegal address' "$STEP"; then
            fail "compute-sanitizer memcheck: memory errors in the kernels ($took s)"
            grep -m 12 -E -A 3 'Invalid __|[Oo]ut of bounds|[Mm]isaligned|Hardware exception' "$STEP" | cut -c1-200 |
                sed 's/^/       /' | tee -a "$SUM"
        elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            fail "compute-sanitizer memcheck did not finish in $t s"
        elif grep -qiE 'not supported|skipped' "$STEP"; then
            fail "compute-sanitizer could not check here: $(grep -m1 -iE 'not supported|skipped' "$STEP" | cut -c1-150)"
        elif [ $rc -eq 0 ] && grep -qE 'ERROR SUMMARY: 0 errors' "$STEP" && summary_ok; then
            say "ok     compute-sanitizer memcheck, op tests ($took s; $(grep -m1 'ERROR SUMMARY' "$STEP" | cut -c1-80))"
        else
            fail "compute-sanitizer memcheck (exit $rc, $took s): $(grep -m1 -E 'ERROR SUMMARY|[Ee]rror' "$STEP" | cut -c1-150)"
            tail -n 5 "$STEP" | cut -c1-200 | sed 's/^/       /' | tee -a "$SUM"
        fi
    fi
fi

finished=1
exit $status
