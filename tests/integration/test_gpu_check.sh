#!/bin/bash
# scripts/gpu-check.sh cannot pass falsely: on this machine (no GPU needed) it runs against stub binaries (a fake
# bundle: nlpd, test_cuda_ops, test_encoder, bench_encoder, a prebuilt libnlpd_cuda.so needing a fake cuBLAS) and
# stub nvidia-smi / compute-sanitizer / pkg-config on PATH. Each scenario breaks one step's command or output
# (skipped tests, no summary, an unsupported sanitizer, a failing or silent benchmark, missing logits, too small a
# budget) and must end in FAIL naming that step; the all-good stubs must end in PASS with the table. Also the
# --dry-run plan (tree / prebuilt / rebuild / none) and what --pack refuses. Bounded: ~15 runs of a few seconds.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NOK_MAX=600

T=$(mktemp -d) || exit 2
trap '[ -n "${GPU_CHECK_TEST_KEEP:-}" ] && echo "# kept $T" || rm -rf "$T"' EXIT
STUB=$T/stub
B=$T/bundle
mkdir -p "$STUB" "$B/bin" "$B/cuda" "$B/lib" "$T/cublas"

# a fake cuBLAS the prebuilt .so needs (a major no real toolkit has), found through CUDA_HOME/lib64
mkdir -p "$T/cudahome/lib64"
echo 'int fake_cublas(void) { return 0; }' > "$T/cb.c"
echo 'int fake_cuda(void) { return 1; }' > "$T/cu.c"
cc -shared -fPIC -o "$T/cudahome/lib64/libcublas.so.99" -Wl,-soname,libcublas.so.99 "$T/cb.c" &&
    cc -shared -fPIC -o "$B/cuda/libnlpd_cuda.so" "$T/cu.c" -Wl,--no-as-needed -L"$T/cudahome/lib64" \
        -l:libcublas.so.99 || { nok "building the fake libraries" "cc failed"; finish; }
echo 0123456789abcdef > "$B/commit"
git ls-files -z | xargs -0 sha256sum > "$B/sources.sha256" # as --pack writes it: the tree unchanged since

cat > "$STUB/pkg-config" << 'EOF'
#!/bin/sh
exit 1
EOF
cat > "$STUB/nvidia-smi" << 'EOF'
#!/bin/sh
echo "Stub GPU, 81559 MiB, 999.0, 9.0"
EOF
cat > "$STUB/compute-sanitizer" << 'EOF'
#!/bin/sh
# STUB_SAN: ok | unsupported | errors
case ${STUB_SAN:-ok} in
unsupported) echo "========= Error: Device not supported"; shift 4; "$@"; exit 0 ;;
errors) echo "========= Invalid __global__ read of size 4 bytes"; echo "========= ERROR SUMMARY: 1 error"; exit 1 ;;
esac
shift 4
"$@"
rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
EOF
cat > "$B/bin/test_cuda_ops" << 'EOF'
#!/bin/sh
# STUB_OPS: ok | skipped | silent | failed | old (without the threads and top-k tests)
if [ "${STUB_OPS:-ok}" = ok ] || [ "$STUB_OPS" = auto-cpu ]; then
    echo "  threads (device 0: stub, sm_90; a stream and a 256 MiB arena per thread): 4 workers x 6 products"
    for i in 1 2 3 4 5; do echo "  topk 8 x 58101 (ld 58101) k 8: columns equal, max |dlogp| 1e-06"; done
fi
case ${STUB_OPS:-ok} in
old) echo "auto picked cuda: stub"; echo "cuda: stub device"; echo "39 passed, 0 failed" ;;
skipped) echo "skipped: no CUDA device/driver (stub)"; echo "1 passed, 0 failed" ;;
silent) ;;
failed) echo "cuda: stub"; echo "FAIL matmul"; echo "40 passed, 1 failed"; exit 1 ;;
auto-cpu) echo "auto picked cpu: auto: CUDA unavailable"; echo "cuda: stub device"; echo "41 passed, 0 failed" ;;
*) echo "auto picked cuda: stub"; echo "cuda: stub device"; echo "41 passed, 0 failed" ;;
esac
exit 0
EOF
# another CUDA test binary (as tests/unit/test_cuda_graph.c gives one): STUB_EXTRA ok | skipped | failed
cat > "$B/bin/test_cuda_fake" << 'EOF'
#!/bin/sh
case ${STUB_EXTRA:-ok} in
skipped) echo "skipped: no CUDA device/driver (stub)"; echo "1 passed, 0 failed" ;;
failed) echo "FAIL graph vs eager"; echo "7 passed, 1 failed"; exit 1 ;;
*) echo "8 passed, 0 failed" ;;
esac
EOF
cat > "$B/bin/test_encoder" << 'EOF'
#!/bin/sh
[ "${STUB_ENC:-ok}" = silent ] && exit 0
echo "12 passed, 0 failed"
EOF
cat > "$B/bin/nlpd" << 'EOF'
#!/bin/sh
# STUB_INFER: ok | nologits; STUB_PIPE: ok | short
echo "kernels: backend cuda (stub)" >&2
case $1 in
infer)
    while read -r l; do
        [ "${STUB_INFER:-ok}" = nologits ] && { echo '{"label": "x"}'; continue; }
        # bf16off: the bf16 run's logits off by 0.25 (beyond 32 bf16 roundoffs of 0.5)
        case "${STUB_INFER:-ok} $*" in *bf16off*bf16*) echo '{"logits": [0.5, -0.5]}'; continue ;; esac
        echo '{"logits": [0.25, -0.5]}'
    done ;;
pipe)
    n=2000
    [ "${STUB_PIPE:-ok}" = short ] && n=1999
    i=0
    while [ $i -lt $n ]; do echo "{\"id\":\"$i\",\"sentiment\":{\"label\":\"pos\"}}"; i=$((i + 1)); done ;;
esac
exit 0
EOF
cat > "$B/bin/bench_encoder" << 'EOF'
#!/bin/sh
# MODEL IDS LOGITS BATCH SEQ RUNS THREADS BACKEND DTYPE; STUB_BENCH: ok | fail | silent (the GPU rows; the CPU
# reference always works) | nan (fp16 rows: NaN logits) | far (bf16 rows: logits off by 1) | ab (a failing A/B row:
# NLPD_CUDA_EPILOGUE set). The switches this "build" reads: NLPD_CUDA_ACT NLPD_CUDA_EPILOGUE NLPD_CUDA_ATTENTION
# NLPD_CUDA_GRAPHS. reffail: the CPU reference fails.
[ "$8" = cpu ] && [ "${STUB_BENCH:-ok}" = reffail ] && { echo "stub: the CPU backend failed" >&2; exit 1; }
if [ "$8" = cuda ]; then
    case ${STUB_BENCH:-ok} in
    fail) echo "run 1 of 1: cuda backend: launching an op: stub failure" >&2; exit 1 ;;
    silent) exit 0 ;;
    ab) [ -n "${NLPD_CUDA_EPILOGUE:-}" ] && { echo "NLPD_CUDA_EPILOGUE: stub refuses '$NLPD_CUDA_EPILOGUE'" >&2; exit 1; } ;;
    esac
fi
head -c $(($4 * $5 * 8)) /dev/zero > "$2"
if [ "$8" = cuda ] && [ "${STUB_BENCH:-ok}" = nan ] && [ "$9" = fp16 ]; then
    i=0; while [ $i -lt $(($4 * 2)) ]; do printf '\000\000\300\177'; i=$((i + 1)); done > "$3"
elif [ "$8" = cuda ] && [ "${STUB_BENCH:-ok}" = far ] && [ "$9" = bf16 ]; then
    i=0; while [ $i -lt $(($4 * 2)) ]; do printf '\000\000\200\077'; i=$((i + 1)); done > "$3"
else
    head -c $(($4 * 8)) /dev/zero > "$3"
fi
echo "{\"nlpd_median_s\": 0.002, \"nlpd_times\": [0.002], \"backend\": \"$8\", \"dtype\": \"$9\", \"batch\": $4, \"seq\": $5}"
EOF
# the python that may have torch: STUB_TORCH ok | missing | nocuda | fail (every row a fail line) | crash (no rows)
cat > "$STUB/torchpy" << 'EOF'
#!/bin/sh
if [ "$1" = -c ]; then
    case ${STUB_TORCH:-ok} in
    missing) echo "ModuleNotFoundError: No module named 'torch'" >&2; exit 1 ;;
    nocuda) exit 3 ;; # what gpu.sh's probe exits with when torch sees no CUDA device
    esac
    exit 0
fi
# torch_cuda.py MODEL IDS REF_BATCH SEQ RUNS WARMUP DTYPES BATCHES OUTDIR DEVICE
[ "${STUB_TORCH:-ok}" = crash ] && { echo "Segmentation fault (stub)" >&2; exit 139; }
for dt in $(echo "$8" | tr , ' '); do
    for b in $(echo "$9" | tr , ' '); do
        if [ "${STUB_TORCH:-ok}" = fail ]; then
            echo "{\"engine\": \"torch ${11}\", \"variant\": \"default\", \"dtype\": \"$dt\", \"batch\": $b, \"fail\": \"RuntimeError: stub\"}"
            continue
        fi
        head -c $((b * 8)) /dev/zero > "${10}/logits-torch-$dt-b$b.bin"
        echo "{\"engine\": \"torch ${11}\", \"variant\": \"default\", \"dtype\": \"$dt\", \"batch\": $b, \"logits\": \"${10}/logits-torch-$dt-b$b.bin\", \"result\": {\"times\": [0.001]}}"
    done
done
EOF
chmod +x "$STUB"/* "$B"/bin/*

# run NAME EXPECT(PASS|FAIL) PATTERN [ENV...]: gpu-check (with $ARGS) and the stubs; the verdict must be EXPECT
# and the summary must match PATTERN (an extended regex)
ARGS=
run() {
    local name=$1 expect=$2 pat=$3 out rc verdict
    shift 3
    out=$T/out-$name
    mkdir -p "$out"
    env PATH="$STUB:$PATH" OUT="$out" GPU_CHECK_BUNDLE="$B" GPU_CHECK_NVCC= CUDA_HOME="$T/cudahome" \
        BENCH_OUT="$T/bench" LAYERS=1 HIDDEN=32 HEADS=2 FFN=64 SEQ=8 RUNS=1 BATCHES="1 2" BENCH_DTYPES="fp32 fp16" \
        AB_BATCH=2 TORCH_PY="$STUB/torchpy" GPU_CHECK_EXTRA_TESTS=test_cuda_fake \
        GPU_CHECK_BUDGET=200 GPU_CHECK_SKIP="bench" "$@" timeout 120 bash scripts/gpu-check.sh $ARGS > "$out/stdout" 2>&1
    rc=$?
    verdict=$(tail -n 1 "$out/gpu-check.txt" 2> /dev/null | grep -oE 'overall: (PASS|FAIL)')
    if [ "$verdict" != "overall: $expect" ]; then
        nok "$name" "want $expect, got '${verdict:-no verdict line}' (exit $rc): $(tail -n 12 "$out/gpu-check.txt" 2> /dev/null | tr '\n' '|')"
    elif [ "$expect" = PASS ] && [ $rc -ne 0 ]; then
        nok "$name" "PASS with exit $rc"
    elif [ "$expect" = FAIL ] && [ $rc -eq 0 ]; then
        nok "$name" "FAIL with exit 0"
    elif ! grep -qE "$pat" "$out/gpu-check.txt"; then
        nok "$name" "no line matching '$pat': $(tr '\n' '|' < "$out/gpu-check.txt" | cut -c1-500)"
    else
        ok "$name" "$expect"
    fi
}

# --- the plan (dry runs) ---
ARGS=--dry-run
run dry-prebuilt PASS '^plan: +the bundle.s binaries and prebuilt libnlpd_cuda.so, cuBLAS from .*cudahome'
run dry-none FAIL '^FAILED no way to run here.*libcublas.so.99' CUDA_HOME="$T/nowhere"
printf '#!/bin/sh\necho "Cuda compilation tools, release 99.0, V99.0.1"\n' > "$T/nvcc" && chmod +x "$T/nvcc"
run dry-rebuild PASS '^plan: +the bundle.s binaries, libnlpd_cuda.so rebuilt with .*/nvcc' CUDA_HOME="$T/nowhere" \
    GPU_CHECK_NVCC="$T/nvcc"
# a packed bundle travels as bundle.tar.gz: the check unpacks it and reads the prebuilt .so's needs
mkdir -p "$T/packed" && tar -czf "$T/packed/bundle.tar.gz" -C "$B" bin lib cuda && cp "$B/commit" "$B/sources.sha256" "$T/packed/"
run dry-packed PASS '^plan: +the bundle.s binaries and prebuilt libnlpd_cuda.so' GPU_CHECK_BUNDLE="$T/packed"
[ -x "$T/packed/bin/nlpd" ] && ok "dry-packed: unpacked" || nok "dry-packed" "bin/nlpd not unpacked"
# a bundle packed from other sources is not used (it would test other code than this tree's)
mkdir -p "$T/stale" && cp -r "$B/bin" "$B/lib" "$B/cuda" "$B/commit" "$T/stale/" &&
    sed "1s/^[0-9a-f]\{64\}/$(printf '%064d' 0)/" "$B/sources.sha256" > "$T/stale/sources.sha256"
run dry-stale FAIL 'bundle yes .*STALE: 1 files differ' GPU_CHECK_BUNDLE="$T/stale"
run dry-broken-nvcc FAIL '^FAILED no way to run here' CUDA_HOME="$T/nowhere" GPU_CHECK_NVCC=/bin/false
run dry-skip PASS '^steps: test_cuda_ops test_cuda_fake infer encoder pipe sanitizer \(budget' GPU_CHECK_SKIP=bench
ARGS=

# --- whole runs: all good, then one broken step each ---
run all-good PASS '^ok +compute-sanitizer memcheck' GPU_CHECK_SKIP=
A=$T/out-all-good/gpu-check.txt
grep -qE '^\| nlpd cuda \| default \| fp16 \| 2 \| 8 \| 2\.000 \| 1000\.0 \| 0 \| - \| ok \|$' "$A" &&
    [ "$(grep -c '^| nlpd cuda | default | fp[0-9a-z-]* | [12] | .* | ok |$' "$A")" -eq 4 ] &&
    grep -q '^| nlpd cuda | default | fp32-tf32 | 1 |' "$A" &&
    ok "all-good: the table has the 4 nlpd rows, fp32 as fp32-tf32" || nok "all-good table" "$(tr '\n' '|' < "$A")"
[ "$(grep -c '^| torch cuda | default | fp[0-9a-z-]* | [12] | 8 | 1\.000 | .* | ok |$' "$A")" -eq 4 ] &&
    grep -q '^nlpd / torch seq/s: .*fp16 b2 0\.50x' "$A" &&
    ok "all-good: the 4 torch rows and the nlpd/torch ratios" || nok "all-good torch rows" "$(tr '\n' '|' < "$A")"
[ "$(grep -c '^| nlpd cuda | NLPD_CUDA_[A-Z_a-z0-9=,]* | fp16 | 2 | .* | ok |$' "$A")" -eq 4 ] &&
    grep -q '^| nlpd cuda | NLPD_CUDA_ACT=fp32,NLPD_CUDA_ATTENTION=cublas | fp16 | 2 | .* | ok |$' "$A" &&
    grep -q '^A/B seq/s against the default: NLPD_CUDA_ACT=fp32 1\.00x, .*NLPD_CUDA_ATTENTION=cublas 1\.00x (1\.00x of NLPD_CUDA_ACT=fp32)' "$A" &&
    ok "all-good: the 4 A/B rows" || nok "all-good A/B rows" "$(tr '\n' '|' < "$A")"
[ -s "$T/out-all-good/gpu-bench.jsonl" ] && ok "all-good: the raw rows come back in OUT" || nok "all-good raw rows" "no gpu-bench.jsonl"
grep -qE '^libnlpd_cuda.so: .*/bundle/cuda; .*libcublas.so.99' "$T/out-all-good/gpu-check.txt" &&
    ok "all-good: the prebuilt .so and its cuBLAS were used" ||
    nok "all-good .so line" "$(grep '^libnlpd_cuda' "$T/out-all-good/gpu-check.txt")"
run ops-skipped FAIL '^FAILED test_cuda_ops skipped' STUB_OPS=skipped
run ops-silent FAIL "^FAILED test_cuda_ops: no 'N passed, 0 failed' line" STUB_OPS=silent
run ops-failed FAIL '^FAILED test_cuda_ops .*exit 1' STUB_OPS=failed
run ops-old FAIL "^FAILED test_cuda_ops: no 'threads \\(device" STUB_OPS=old
run extra-skipped FAIL '^FAILED test_cuda_fake skipped its CUDA tests' STUB_EXTRA=skipped
run extra-failed FAIL '^FAILED test_cuda_fake on the GPU \(exit 1' STUB_EXTRA=failed
run extra-missing FAIL '^FAILED test_cuda_nosuch: no .*/bin/test_cuda_nosuch' GPU_CHECK_EXTRA_TESTS="test_cuda_fake test_cuda_nosuch"
grep -q '^ok     test_cuda_fake on the GPU' "$T/out-all-good/gpu-check.txt" && ok "all-good: the other CUDA test ran" ||
    nok "all-good extra test" "$(grep test_cuda_fake "$T/out-all-good/gpu-check.txt")"
run sanitizer-unsupported FAIL '^FAILED compute-sanitizer could not check here: .*Device not supported' STUB_SAN=unsupported
run sanitizer-errors FAIL '^FAILED compute-sanitizer memcheck: memory errors' STUB_SAN=errors
mkdir -p "$T/nosan" && cp "$STUB/pkg-config" "$STUB/nvidia-smi" "$T/nosan/"
run sanitizer-missing FAIL '^FAILED compute-sanitizer not found' PATH="$T/nosan:$PATH"
run encoder-on-cpu FAIL '^FAILED test_encoder: backend auto did not pick CUDA' STUB_OPS=auto-cpu
run infer-nologits FAIL '^FAILED nlpd infer fp32: not 2 results with logits' STUB_INFER=nologits
run infer-bf16-off FAIL '^FAILED nlpd infer: cuda logits vs cpu fp32 .*' STUB_INFER=bf16off
grep -q '^       parity bf16: max |dlogit| 0.25, relative 0.5, issue 20 target 1e-3: NOT met' "$T/out-infer-bf16-off/gpu-check.txt" &&
    grep -q '^       parity fp16: max |dlogit| 0, relative 0, issue 20 target 1e-3: met' "$T/out-infer-bf16-off/gpu-check.txt" &&
    ok "infer-bf16-off: the parity figures in the summary" ||
    nok "infer-bf16-off figures" "$(grep parity "$T/out-infer-bf16-off/gpu-check.txt" | tr '\n' '|')"
run encoder-silent FAIL "^FAILED test_encoder: no 'N passed, 0 failed' line" STUB_ENC=silent
run pipe-short FAIL '^FAILED nlpd pipe' STUB_PIPE=short
run bench-fails FAIL '^\| nlpd cuda \| default \| fp32-tf32 \| 1 \| .*\| FAIL exit 1: run 1 of 1: cuda backend: launching an op: stub failure \|$' \
    GPU_CHECK_SKIP= STUB_BENCH=fail
grep -q '^FAILED bench/encoder: bench rows: 4 ok, 8 failed$' "$T/out-bench-fails/gpu-check.txt" &&
    ok "bench-fails: the summary counts the failed rows" || nok "bench-fails count" "$(tr '\n' '|' < "$T/out-bench-fails/gpu-check.txt")"
run bench-silent FAIL '^\| nlpd cuda \| default \| fp16 \| 2 \| .*\| FAIL no result line \(exit 0\) \|$' GPU_CHECK_SKIP= STUB_BENCH=silent
run bench-ref-fails FAIL '^FAILED bench/encoder: the model or the CPU reference failed: FAILED: the CPU reference: stub' \
    GPU_CHECK_SKIP= STUB_BENCH=reffail
grep -q 'no benchmark rows' "$T/out-bench-ref-fails/gpu-check.txt" && ok "bench-ref-fails: the table says it has no rows" ||
    nok "bench-ref-fails table" "$(tail -n 3 "$T/out-bench-ref-fails/gpu-check.txt" | tr '\n' '|')"
# the rows added for issue 20: an A/B row that fails, a switch this build does not read, PyTorch missing (a note,
# not a failure), PyTorch without CUDA, a failing or crashing PyTorch, NaN logits, logits far from the CPU's
run bench-ab-fails FAIL '^\| nlpd cuda \| NLPD_CUDA_EPILOGUE=separate \| fp16 \| 2 \| .*\| FAIL exit 1: NLPD_CUDA_EPILOGUE: stub refuses' \
    GPU_CHECK_SKIP= STUB_BENCH=ab
grep -q '^| nlpd cuda | NLPD_CUDA_ACT=fp32 | fp16 | 2 | .* | ok |$' "$T/out-bench-ab-fails/gpu-check.txt" &&
    grep -q '^FAILED bench/encoder: bench rows: 11 ok, 1 failed' "$T/out-bench-ab-fails/gpu-check.txt" &&
    ok "bench-ab-fails: only that row failed, and the summary counts it" ||
    nok "bench-ab-fails rows" "$(tr '\n' '|' < "$T/out-bench-ab-fails/gpu-check.txt")"
run bench-ab-unknown FAIL '^\| nlpd cuda \| NLPD_CUDA_ACT=fp32,NLPD_CUDA_NOSUCH=1 \| fp16 \| 2 \| .*\| FAIL NLPD_CUDA_NOSUCH is not read by this build' \
    GPU_CHECK_SKIP= BENCH_AB="NLPD_CUDA_GRAPHS=0 NLPD_CUDA_ACT=fp32,NLPD_CUDA_NOSUCH=1"
run bench-torch-missing PASS '^\| torch cuda \| default \| - \| - \| 8 \| .*not run: torch: not installed on this machine' \
    GPU_CHECK_SKIP= STUB_TORCH=missing
run bench-torch-nocuda PASS '^\| torch cuda \| .*not run: torch: installed, but torch.cuda.is_available\(\) is false' \
    GPU_CHECK_SKIP= STUB_TORCH=nocuda
run bench-torch-fails FAIL '^\| torch cuda \| default \| fp16 \| 1 \| .*\| FAIL RuntimeError: stub \|$' GPU_CHECK_SKIP= STUB_TORCH=fail
run bench-torch-crash FAIL '^\| torch cuda \| default \| fp32-tf32 \| 1 \| .*\| FAIL not run' GPU_CHECK_SKIP= STUB_TORCH=crash
run bench-nan FAIL '^\| nlpd cuda \| default \| fp16 \| 1 \| .*\| FAIL non-finite logits \|$' GPU_CHECK_SKIP= STUB_BENCH=nan
run bench-far FAIL '^\| nlpd cuda \| default \| bf16 \| 2 \| .* \| 1 \| .*\| FAIL off the CPU reference' GPU_CHECK_SKIP= \
    STUB_BENCH=far BENCH_DTYPES="fp16 bf16"
# the benchmark itself (bench/encoder/gpu.sh, not stubbed) on the real CUDA backend under the host emulator
# (build/emul): every row against the CPU reference, an A/B row through a switch this build reads, torch missing
E=$T/emul
if [ -f build/emul/libnlpd_cuda.so ] && [ -x build/bench/bench_encoder ]; then
    env NLPD_CUDA_EMULATOR=1 NLPD_LIBDIR="$PWD/build/emul" NLPD_CUDA_ARENA_MB=16 BENCH_OUT="$E" LAYERS=1 HIDDEN=32 \
        HEADS=2 FFN=64 SEQ=8 RUNS=1 WARMUP=0 BATCHES="1 2" BENCH_DTYPES="fp16 fp32-strict" AB_BATCH=2 \
        BENCH_AB="NLPD_CUDA_MATH=strict" TORCH_PY="$STUB/torchpy" STUB_TORCH=missing REF_THREADS=1 ROW_TIMEOUT=60 \
        timeout 240 sh bench/encoder/gpu.sh > "$E.out" 2>&1
    rc=$?
    [ $rc -eq 0 ] && [ "$(grep -c '^| nlpd cuda | default | fp[0-9a-z-]* | [12] | 8 | [0-9.]* | [0-9.]* | [0-9.e-]* | [0-9.e-]* | ok |$' "$E.out")" -eq 4 ] &&
        grep -q '^| nlpd cuda | NLPD_CUDA_MATH=strict | fp16 | 2 | 8 | .* | ok |$' "$E.out" &&
        grep -q '^| torch cuda | .*not run: torch: not installed on this machine' "$E.out" &&
        grep -q '^bench rows: 5 ok, 0 failed$' "$E.out" &&
        ok "gpu.sh under the CUDA emulator: 5 rows within their guards of the CPU reference" ||
        nok "gpu.sh under the CUDA emulator" "exit $rc: $(tail -n 14 "$E.out" | tr '\n' '|')"
else
    nok "gpu.sh under the CUDA emulator" "build/emul/libnlpd_cuda.so or build/bench/bench_encoder not built (make all)"
fi
run budget-too-small FAIL '^FAILED .*not run, .* s of the budget left' GPU_CHECK_BUDGET=45
finish
