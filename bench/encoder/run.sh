#!/bin/sh
# Encoder benchmark, one command: a BERT-base-shaped model (random weights, written as a safetensors folder into
# build/bench-encoder/) in nlpd vs the same shapes as a plain torch.nn model in PyTorch (Debian python3-torch),
# same token ids, same thread count. Prints sequences/s for both, the ratio, the largest logit difference, and
# nlpd's GFLOP/s next to OpenBLAS sgemm's on the same matrix shapes. Medians of RUNS timed runs after a warm-up.
# Environment: THREADS (default: online CPUs), ROUNDS (2), RUNS (3 per round), BATCH (32), SEQ (128), LAYERS (12), HIDDEN (768),
# HEADS (12), FFN (3072), BENCH_OUT (build/bench-encoder). On the CPU (the default) it runs peers.py: nlpd fp32/bf16/int8, ONNX Runtime fp32/int8
# and PyTorch fp32/int8/bf16 at BATCHES ("32 1") x THREADS_LIST ("1 2"), engines interleaved, RUNS_B1 (15) runs
# per process at batch 1. BENCH_BACKEND=cuda: the GPU benchmark, bench/encoder/gpu.sh.
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

# --- GPU: BENCH_BACKEND=cuda: bench/encoder/gpu.sh (nlpd's CUDA backend and PyTorch on the same GPU, fp16 / bf16 /
# fp32-tf32 at BATCHES "1 32 128", the A/B rows, every row against nlpd's CPU fp32 logits; its header lists the knobs)
if [ "$BENCH_BACKEND" != cpu ]; then
    exec sh bench/encoder/gpu.sh
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
