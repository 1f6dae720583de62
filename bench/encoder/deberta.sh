#!/bin/sh
# DeBERTa-v3 against BERT in nlpd at the same size (hidden, layers, heads, FFN, vocab, batch x seq): random-weight
# folders from gen_model.py (--arch bert / deberta) in build/bench-encoder/, bench_encoder on each, the two
# interleaved ROUNDS times so both see the same machine load. Prints each round's medians and the median over the
# rounds of the per-token time ratio DeBERTa / BERT (the same token count, so the ratio of the batch times).
# Environment: THREADS (online CPUs), ROUNDS (5), RUNS (5 timed runs per process), BATCH (8), SEQ (128), LAYERS (12),
# HIDDEN (384), HEADS (6), FFN (1536) (DeBERTa-v3-xsmall's shape), DTYPE (fp32 | bf16 | int8), BENCH_CLOCK (wall;
# cpu = process CPU time, meaningful with THREADS=1 on a shared machine).
set -eu
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-5}
BATCH=${BATCH:-8}
SEQ=${SEQ:-128}
LAYERS=${LAYERS:-12}
HIDDEN=${HIDDEN:-384}
HEADS=${HEADS:-6}
FFN=${FFN:-1536}
DTYPE=${DTYPE:-fp32}
PY=/usr/bin/python3 # Debian's python (numpy)
OUT=build/bench-encoder
BIN=build/bench/bench_encoder
[ -x "$BIN" ] || make --no-print-directory -j"$(nproc)" "$BIN" > /dev/null
mkdir -p "$OUT"
for arch in bert deberta; do
    m=$OUT/$arch-L$LAYERS-H$HIDDEN-A$HEADS-F$FFN
    [ -f "$m/model.safetensors" ] ||
        $PY bench/encoder/gen_model.py "$m" --arch $arch --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS" \
            --ffn "$FFN" --vocab 30522
done
echo "== nlpd $DTYPE, batch $BATCH x seq $SEQ, L$LAYERS H$HIDDEN A$HEADS F$FFN, $THREADS threads, $ROUNDS rounds x $RUNS runs, ${BENCH_CLOCK:-wall} clock"
r=1
: > "$OUT/deberta-ratio.txt"
while [ "$r" -le "$ROUNDS" ]; do
    for arch in bert deberta; do
        BENCH_SGEMM=0 "$BIN" "$OUT/$arch-L$LAYERS-H$HIDDEN-A$HEADS-F$FFN" "$OUT/ids.bin" "$OUT/logits.bin" "$BATCH" \
            "$SEQ" "$RUNS" "$THREADS" cpu "$DTYPE" 2> /dev/null > "$OUT/$arch.json"
    done
    $PY - "$OUT/bert.json" "$OUT/deberta.json" "$BATCH" "$SEQ" "$r" >> "$OUT/deberta-ratio.txt" << 'EOF'
import json, sys
b, d = (json.load(open(p))["nlpd_median_s"] for p in sys.argv[1:3])
t = int(sys.argv[3]) * int(sys.argv[4])
print("%s %.6f %.6f %.4f" % (sys.argv[5], b / t * 1e6, d / t * 1e6, d / b))
EOF
    tail -n 1 "$OUT/deberta-ratio.txt" | awk '{printf "round %s: bert %.2f us/token, deberta %.2f us/token, ratio %.3f\n", $1, $2, $3, $4}'
    r=$((r + 1))
done
sort -k4 -g "$OUT/deberta-ratio.txt" | awk '{v[NR] = $4} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
    printf "median DeBERTa / BERT per-token time: %.3f (%d rounds)\n", m, NR}'
