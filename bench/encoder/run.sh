#!/bin/sh
# Encoder benchmark, one command: a BERT-base-shaped model (random weights, written as a safetensors folder into
# build/bench-encoder/) in nlpd vs the same shapes as a plain torch.nn model in PyTorch (Debian python3-torch),
# same token ids, same thread count. Prints sequences/s for both, the ratio, the largest logit difference, and
# nlpd's GFLOP/s next to OpenBLAS sgemm's on the same matrix shapes. Medians of RUNS timed runs after a warm-up.
# Environment: THREADS (default: online CPUs), ROUNDS (2), RUNS (3 per round), BATCH (32), SEQ (128), LAYERS (12), HIDDEN (768),
# HEADS (12), FFN (3072).
set -eu
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-2}
RUNS=${RUNS:-3}
BATCH=${BATCH:-32}
SEQ=${SEQ:-128}
LAYERS=${LAYERS:-12}
HIDDEN=${HIDDEN:-768}
HEADS=${HEADS:-12}
FFN=${FFN:-3072}
PY=/usr/bin/python3 # Debian's python, where python3-torch lives
OUT=build/bench-encoder
MODEL=$OUT/bert-L$LAYERS-H$HIDDEN-A$HEADS-F$FFN
BENCH_BACKEND=${BENCH_BACKEND:-cpu}

# --- GPU: BENCH_BACKEND=cuda [BENCH_DTYPES="fp32 fp16"] [BATCHES="1 32 128"] [BENCH_BIN=build/bench/bench_encoder] ---
# nlpd's CUDA backend at each batch size and dtype (seq SEQ), against PyTorch on the same GPU when python3 has
# torch with CUDA, else against published TensorRT A100 figures (printed as published, not measured).
if [ "$BENCH_BACKEND" != cpu ]; then
    PY=python3 # the GPU machines' python (torch with CUDA, numpy); Debian's where python3 has no numpy
    python3 -c "import numpy" 2> /dev/null || PY=/usr/bin/python3
    BIN=${BENCH_BIN:-build/bench/bench_encoder}
    export NLPD_LIBDIR=${NLPD_LIBDIR:-$PWD/build} # libnlpd_cuda.so
    [ -x "$BIN" ] || make --no-print-directory -j"$(nproc)" "$BIN" > /dev/null
    mkdir -p "$OUT"
    if [ ! -f "$MODEL/model.safetensors" ]; then
        echo "== writing the random-weight model to $MODEL"
        $PY bench/encoder/gen_model.py "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN"
    fi
    TORCH_GPU=0
    $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null && TORCH_GPU=1
    : > "$OUT/gpu.jsonl"
    for dt in ${BENCH_DTYPES:-fp32 fp16}; do
        for b in ${BATCHES:-1 32 128}; do
            echo "== nlpd $BENCH_BACKEND $dt batch $b x seq $SEQ, $RUNS runs"
            "$BIN" "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" "$b" "$SEQ" "$RUNS" 1 "$BENCH_BACKEND" "$dt" |
                sed 's/^{/{"engine": "nlpd", /' | tee -a "$OUT/gpu.jsonl"
            if [ "$TORCH_GPU" = 1 ]; then
                echo "== PyTorch cuda $dt batch $b"
                $PY bench/encoder/torch_bench.py "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" "$b" "$SEQ" "$RUNS" 1 cuda "$dt" |
                    sed "s/^{/{\"engine\": \"torch\", \"dtype\": \"$dt\", \"batch\": $b, /" | tee -a "$OUT/gpu.jsonl"
            fi
        done
    done
    $PY - "$OUT/gpu.jsonl" "$SEQ" "$TORCH_GPU" "L=$LAYERS H=$HIDDEN A=$HEADS FFN=$FFN" << 'PYEOF'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
seq, torch_gpu = sys.argv[2], sys.argv[3] == "1"
print()
print(f"encoder {sys.argv[4]}, seq {seq}, medians of the timed runs")
print("| engine  | dtype | batch | latency ms | sequences/s | max abs logit diff vs nlpd |")
print("|---------|-------|------:|-----------:|------------:|---------------------------:|")
for r in rows:
    s = r.get("nlpd_median_s", r.get("torch_median_s"))
    d = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else ""
    print(f"| {r['engine']:7} | {r['dtype']:5} | {r['batch']:5} | {s * 1e3:10.3f} | {r['batch'] / s:11.1f} | {d:>26} |")
if not torch_gpu:
    print("PyTorch with CUDA is not available here. Published TensorRT figures on an A100 (BERT-base, seq 128; "
          "published by NVIDIA, NOT measured here): fp16 batch 32: 4.10 ms; int8 batch 32: 2.27 ms.")
PYEOF
    exit 0
fi

if ! $PY -c 'import torch, numpy' 2> /dev/null; then
    echo "== installing python3-torch (PyTorch baseline)"
    apt-get install -y python3-torch > /dev/null
fi

echo "== building"
make --no-print-directory -j"$(nproc)" build/libnlpd.a > /dev/null
mkdir -p "$OUT"
# shellcheck disable=SC2046
cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Ikernels -Istages/models $(pkg-config --cflags jansson openblas) \
    -o "$OUT/bench_encoder" bench/encoder/bench_encoder.c build/libnlpd.a \
    $(pkg-config --libs jansson openblas) -lm -pthread

if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "== writing the random-weight model to $MODEL"
    $PY bench/encoder/gen_model.py "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN"
fi

# Rounds alternate nlpd and PyTorch so that both see the same background load; medians pool every round.
r=1
: > "$OUT/nlpd.jsonl"
: > "$OUT/torch.jsonl"
while [ "$r" -le "$ROUNDS" ]; do
    echo "== round $r/$ROUNDS: nlpd, batch $BATCH x seq $SEQ, $THREADS threads, $RUNS runs"
    OPENBLAS_NUM_THREADS=$THREADS "$OUT/bench_encoder" "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" \
        "$BATCH" "$SEQ" "$RUNS" "$THREADS" | tee -a "$OUT/nlpd.jsonl"
    echo "== round $r/$ROUNDS: PyTorch, same shapes, same ids, $THREADS threads, $RUNS runs"
    OMP_NUM_THREADS=$THREADS $PY bench/encoder/torch_bench.py "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" \
        "$BATCH" "$SEQ" "$RUNS" "$THREADS" | tee -a "$OUT/torch.jsonl"
    r=$((r + 1))
done

$PY - "$OUT/nlpd.jsonl" "$OUT/torch.jsonl" "$BATCH" "$SEQ" "$LAYERS" "$HIDDEN" "$HEADS" "$FFN" "$THREADS" << 'PYEOF'
import json, sys
import statistics
ns = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
ts = [json.loads(x) for x in open(sys.argv[2]) if x.strip()]
b, s, l, h, a, f, th = sys.argv[3:10]
n = dict(ns[-1])
n["nlpd_median_s"] = statistics.median([x for r in ns for x in r["nlpd_times"]])
n["nlpd_seq_per_s"] = int(b) / n["nlpd_median_s"]
n["nlpd_gflops"] = n["gflop_per_batch"] / n["nlpd_median_s"]
n["sgemm_gflops"] = statistics.median([x for r in ns for x in r["sgemm_gflops_runs"]])
t = {"torch_median_s": statistics.median([x for r in ts for x in r["torch_times"]]),
     "max_abs_diff": max(r["max_abs_diff"] for r in ts)}
tsps = int(b) / t["torch_median_s"]
runs = sum(len(r["nlpd_times"]) for r in ns)
print()
print(f"BERT shapes L={l} H={h} A={a} FFN={f}, batch {b} x seq {s}, {th} threads ({n['simd']} kernels), "
      f"medians of {runs} runs each")
print(f"| engine  | median s/batch | sequences/s | GFLOP/s |")
print(f"|---------|---------------:|------------:|--------:|")
print(f"| nlpd    | {n['nlpd_median_s']:14.3f} | {n['nlpd_seq_per_s']:11.2f} | {n['nlpd_gflops']:7.1f} |")
print(f"| PyTorch | {t['torch_median_s']:14.3f} | {tsps:11.2f} | {n['gflop_per_batch'] / t['torch_median_s']:7.1f} |")
print(f"nlpd / PyTorch throughput: {n['nlpd_seq_per_s'] / tsps:.2f}x")
print(f"OpenBLAS sgemm alone on the layer's shapes: {n['sgemm_gflops']:.1f} GFLOP/s; "
      f"nlpd reaches {100 * n['nlpd_gflops'] / n['sgemm_gflops']:.0f}% of it")
print(f"max |logit difference| nlpd vs PyTorch: {t['max_abs_diff']:.3g}")
PYEOF
