#!/bin/sh
# Encoder benchmark, one command: a BERT-base-shaped model (random weights, written as a safetensors folder into
# build/bench-encoder/) in nlpd vs the same shapes as a plain torch.nn model in PyTorch (Debian python3-torch),
# same token ids, same thread count. Prints sequences/s for both, the ratio, the largest logit difference, and
# nlpd's GFLOP/s next to OpenBLAS sgemm's on the same matrix shapes. Medians of RUNS timed runs after a warm-up.
# Environment: THREADS (default: online CPUs), ROUNDS (2), RUNS (3 per round), BATCH (32), SEQ (128), LAYERS (12), HIDDEN (768),
# HEADS (12), FFN (3072), BENCH_OUT (build/bench-encoder). On the CPU (the default) it runs peers.py: nlpd fp32/bf16/int8, ONNX Runtime fp32/int8
# and PyTorch fp32/int8/bf16 at BATCHES ("32 1") x THREADS_LIST ("1 2"), engines interleaved, RUNS_B1 (15) runs
# per process at batch 1.
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
OUT=${BENCH_OUT:-build/bench-encoder}
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
    # each run's output goes to a file first (no pipe hides its exit status); a failed run or a run without its
    # JSON line fails the benchmark, and the table below refuses to print with a row missing
    want=0
    for dt in ${BENCH_DTYPES:-fp32 fp16}; do
        for b in ${BATCHES:-1 32 128}; do
            echo "== nlpd $BENCH_BACKEND $dt batch $b x seq $SEQ, $RUNS runs"
            want=$((want + 1))
            if ! "$BIN" "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" "$b" "$SEQ" "$RUNS" 1 "$BENCH_BACKEND" "$dt" \
                > "$OUT/run.json"; then
                echo "FAILED: nlpd $BENCH_BACKEND $dt batch $b exited non-zero" >&2
                exit 1
            fi
            grep -q '^{.*"nlpd_median_s"' "$OUT/run.json" || {
                echo "FAILED: nlpd $BENCH_BACKEND $dt batch $b printed no result line" >&2
                exit 1
            }
            cp "$OUT/logits.bin" "$OUT/logits-$dt-$b.bin"
            sed "s|^{|{\"engine\": \"nlpd\", \"logits_file\": \"$OUT/logits-$dt-$b.bin\", |" "$OUT/run.json" |
                tee -a "$OUT/gpu.jsonl"
            if [ "$TORCH_GPU" = 1 ]; then
                echo "== PyTorch cuda $dt batch $b"
                want=$((want + 1))
                if ! $PY bench/encoder/torch_bench.py "$MODEL" "$OUT/ids.bin" "$OUT/logits.bin" "$b" "$SEQ" "$RUNS" 1 \
                    cuda "$dt" > "$OUT/run.json"; then
                    echo "FAILED: PyTorch cuda $dt batch $b exited non-zero" >&2
                    exit 1
                fi
                sed "s/^{/{\"engine\": \"torch\", \"dtype\": \"$dt\", \"batch\": $b, /" "$OUT/run.json" |
                    tee -a "$OUT/gpu.jsonl"
            fi
        done
    done
    $PY - "$OUT/gpu.jsonl" "$SEQ" "$TORCH_GPU" "L=$LAYERS H=$HIDDEN A=$HEADS FFN=$FFN" "$want" << 'PYEOF'
import json, math, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
seq, torch_gpu, want = sys.argv[2], sys.argv[3] == "1", int(sys.argv[5])
if len(rows) != want:
    sys.exit(f"FAILED: {len(rows)} result rows, {want} expected")
for r in rows:
    s = r.get("nlpd_median_s", r.get("torch_median_s"))
    if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        sys.exit(f"FAILED: row without a positive median time: {r}")
# max |delta logit|: torch rows against nlpd's logits of the same run (torch_bench.py), nlpd fp16/bf16 rows
# against nlpd fp32 at the same batch (same ids) when that ran
import numpy as np
ref = {r["batch"]: np.fromfile(r["logits_file"], dtype=np.float32)
       for r in rows if r["engine"] == "nlpd" and r["dtype"] == "fp32" and "logits_file" in r}
print()
print(f"encoder {sys.argv[4]}, seq {seq}, medians of the timed runs")
print("| engine | dtype | batch | latency ms | seq/s | max |dlogit| | vs |")
print("|--------|-------|------:|-----------:|------:|-------------:|----|")
for r in rows:
    s = r.get("nlpd_median_s", r.get("torch_median_s"))
    d, vs = "", ""
    if "max_abs_diff" in r:
        d, vs = f"{r['max_abs_diff']:.3g}", "nlpd same dtype"
    elif r["engine"] == "nlpd" and r["dtype"] != "fp32" and r["batch"] in ref:
        d = float(np.max(np.abs(np.fromfile(r["logits_file"], dtype=np.float32) - ref[r["batch"]])))
        d, vs = f"{d:.3g}", "nlpd fp32"
    print(f"| {r['engine']:6} | {r['dtype']:5} | {r['batch']:5} | {s * 1e3:10.3f} | {r['batch'] / s:9.1f} | "
          f"{d:>12} | {vs} |")
if not torch_gpu:
    print("PyTorch with CUDA is not available here. Published TensorRT figures on an A100 (BERT-base, seq 128; "
          "published by NVIDIA, NOT measured here): fp16 batch 32: 4.10 ms; int8 batch 32: 2.27 ms.")
PYEOF
    exit 0
fi

# --- CPU: nlpd fp32 / bf16 / int8 against ONNX Runtime and PyTorch (peers.py; README "Performance") ---
if ! $PY -c 'import torch, numpy, onnx' 2> /dev/null; then
    echo "== installing python3-torch python3-onnx (PyTorch baseline, ONNX export)"
    apt-get install -y python3-torch python3-onnx > /dev/null
fi
ORT_DIR=build/ort
if [ ! -f "$ORT_DIR/node_modules/onnxruntime-node/package.json" ]; then
    echo "== installing npm onnxruntime-node into $ORT_DIR (its CPU library ships in the package)"
    mkdir -p "$ORT_DIR"
    # --ignore-scripts: the install script only fetches the CUDA/TensorRT providers (from nuget), not needed here
    (cd "$ORT_DIR" && npm install --no-audit --no-fund --ignore-scripts onnxruntime-node@1.30.0 > /dev/null)
fi

echo "== building"
make --no-print-directory -j"$(nproc)" build/bench/bench_encoder > /dev/null
mkdir -p "$OUT"
if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "== writing the random-weight model to $MODEL"
    $PY bench/encoder/gen_model.py "$MODEL" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" --ffn "$FFN"
fi
echo "== exporting ONNX fp32 and dynamic-int8 models (once)"
$PY bench/encoder/onnx_export.py "$MODEL" "$OUT/onnx" 2> "$OUT/onnx_export.log" || {
    cat "$OUT/onnx_export.log"
    exit 1
}
MODEL=$MODEL OUT=$OUT SEQ=$SEQ NODE_PATH=$PWD/$ORT_DIR/node_modules \
    BATCHES=${BATCHES:-32 1} THREADS_LIST=${THREADS_LIST:-1 2} ROUNDS=${ROUNDS} RUNS=${RUNS} \
    $PY bench/encoder/peers.py build/bench/bench_encoder
