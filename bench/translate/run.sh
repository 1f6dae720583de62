#!/bin/sh
# Translation benchmark, one command: an OPUS-MT-base-shaped Marian model (d_model 512, 6+6 layers, 8 heads, FFN 2048,
# vocab 58101, swish; random weights written by tests/models/make_marian.py into build/bench-translate/) translating
# seeded random source ids in `nlpd infer` vs the same model as plain torch.nn code with a KV cache in PyTorch
# (Debian python3-torch), same ids, same generation settings, same thread count. Greedy and beam search (BEAMS).
# Every sentence gets exactly MAX_LENGTH-1 target tokens (eos banned until max_length, no forced eos), so both sides
# do the same work. Prints target tokens/s (medians over RUNS rounds), the nlpd/PyTorch ratio and the share of
# sentences whose output ids agree.
# Environment: THREADS (default: online CPUs), RUNS (3), SENTENCES (500, greedy), BEAM_SENTENCES (96, beam search:
# the first ones of the same sources), BEAMS (4), BATCH (32), MAX_LENGTH (33), SEED (1), DTYPE (fp32; bf16 or int8:
# nlpd's CPU dtypes, compared with PyTorch fp32's output ids).
set -eu
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-$(nproc)}
RUNS=${RUNS:-3}
SENTENCES=${SENTENCES:-500}
BEAM_SENTENCES=${BEAM_SENTENCES:-96}
BEAMS=${BEAMS:-4}
BATCH=${BATCH:-32}
MAX_LENGTH=${MAX_LENGTH:-33}
SEED=${SEED:-1}
DTYPE=${DTYPE:-fp32}
if [ "$BEAM_SENTENCES" -gt "$SENTENCES" ]; then BEAM_SENTENCES=$SENTENCES; fi
PY=/usr/bin/python3 # Debian's python, where python3-torch lives
OUT=build/bench-translate
MODEL=$OUT/opus-mt-base-random
NLPD=build/nlpd
# Both engines get the same thread settings. PyTorch (Debian's build) runs its GEMMs in OpenBLAS (pthreads) and its
# other ops in OpenMP threads; with OpenMP's default active wait the two pools spin against each other on a small
# machine (about 3x slower here), so the OpenMP threads wait passively. nlpd uses no OpenMP.
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

if ! $PY -c 'import torch, numpy' 2> /dev/null; then
    echo "== installing python3-torch (PyTorch baseline)"
    apt-get install -y python3-torch > /dev/null
fi

echo "== building"
make --no-print-directory -j"$(nproc)" "$NLPD" > /dev/null
mkdir -p "$OUT"

if [ ! -f "$MODEL/model.safetensors" ]; then
    echo "== writing the random-weight model to $MODEL"
    $PY tests/models/make_marian.py --out "$MODEL" --seed 1 --d-model 512 --layers 6 6 --heads 8 --ffn 2048 \
        --vocab 58101 --activation swish --max-pos 512 --std 0.05
fi

# Sources: SENTENCES lines of 8..40 ids (uniform, seeded), the last one eos (0), no pad (58100).
SRC=$OUT/src-$SENTENCES-$SEED.jsonl
BSRC=$OUT/src-$SENTENCES-$SEED-first$BEAM_SENTENCES.jsonl
$PY - "$SENTENCES" "$SEED" > "$SRC" << 'PYEOF'
import json, random, sys
r = random.Random(int(sys.argv[2]))
for _ in range(int(sys.argv[1])):
    n = r.randint(8, 40)
    print(json.dumps({"input_ids": [r.randint(1, 58099) for _ in range(n - 1)] + [0]}))
PYEOF
head -n "$BEAM_SENTENCES" "$SRC" > "$BSRC"

now() { date +%s.%N; }
# nlpd_run BEAMS SOURCES OUTFILE: prints the wall seconds of one `nlpd infer` over SOURCES
nlpd_run() {
    t0=$(now)
    "$NLPD" infer --model "$MODEL" --num-beams "$1" --max-length "$MAX_LENGTH" --min-length "$MAX_LENGTH" \
        --forced-eos-token-id -1 --batch "$BATCH" --threads "$THREADS" --dtype "$DTYPE" < "$2" > "$3"
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

# Rounds alternate nlpd and PyTorch so that both see the same background load; medians pool every round.
: > "$OUT/times.txt"
: > "$OUT/torch.jsonl"
r=1
while [ "$r" -le "$RUNS" ]; do
    echo "== round $r/$RUNS: nlpd ($THREADS threads): load only, greedy x $SENTENCES, beams $BEAMS x $BEAM_SENTENCES"
    t=$(nlpd_run 1 /dev/null /dev/null)
    echo "load $t" | tee -a "$OUT/times.txt"
    t=$(nlpd_run 1 "$SRC" "$OUT/nlpd-beams1.jsonl")
    echo "greedy $t" | tee -a "$OUT/times.txt"
    t=$(nlpd_run "$BEAMS" "$BSRC" "$OUT/nlpd-beams$BEAMS.jsonl")
    echo "beam $t" | tee -a "$OUT/times.txt"
    echo "== round $r/$RUNS: PyTorch ($THREADS threads): greedy x $SENTENCES, beams $BEAMS x $BEAM_SENTENCES"
    $PY bench/translate/torch_translate.py "$MODEL" "$SRC" "$BATCH" "$MAX_LENGTH" "$THREADS" "$OUT/torch" 1 \
        "$BEAMS:$BEAM_SENTENCES" | tee -a "$OUT/torch.jsonl"
    r=$((r + 1))
done

$PY - "$OUT" "$BEAMS" "$SENTENCES" "$BEAM_SENTENCES" "$THREADS" "$BATCH" "$MAX_LENGTH" << 'PYEOF'
import json, statistics, sys
out, K, ns, nb, th, batch, ml = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
times = {"load": [], "greedy": [], "beam": []}
for line in open(out + "/times.txt"):
    k, v = line.split()
    times[k].append(float(v))
load = statistics.median(times["load"])
tr = [json.loads(x) for x in open(out + "/torch.jsonl") if x.strip()]


def ids(path):
    return [json.loads(x)["output_ids"] for x in open(path) if x.strip()]


rows = []
for mode, beams, n, nt in (("greedy", "1", ns, times["greedy"]), ("beam %s" % K, K, nb, times["beam"])):
    a, b = ids("%s/nlpd-beams%s.jsonl" % (out, beams)), ids("%s/torch-beams%s.jsonl" % (out, beams))
    tok = sum(len(x) - 1 for x in a)
    ttok = [t["target_tokens"][beams] for t in tr if beams in t["beams"]]
    assert len(a) == n and tok == n * (ml - 1) and all(x == tok for x in ttok), (len(a), tok, ttok)
    nlpd_s = statistics.median(nt) - load
    torch_s = statistics.median([t["beams"][beams] for t in tr if beams in t["beams"]])
    agree = sum(x == y for x, y in zip(a, b))
    first = sum(x[1] == y[1] for x, y in zip(a, b))
    best = (min(nt) - load, min(t["beams"][beams] for t in tr if beams in t["beams"]))
    rows.append((mode, n, tok, nlpd_s, torch_s, agree, first, best))

print()
cpu = [x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")]
print(f"CPU: {cpu[0] if cpu else '?'} ({len(cpu)} online)")
print(f"OPUS-MT-base shapes (d_model 512, 6+6 layers, 8 heads, FFN 2048, vocab 58101, swish, random weights), "
      f"batch {batch}, {ml - 1} target tokens per sentence, {th} threads, medians of {len(times['greedy'])} runs each")
print(f"nlpd times are wall time of `nlpd infer` minus its median load time ({load:.2f} s: a run with no input)")
print("| decoding | sentences | target tokens | nlpd s | nlpd tok/s | PyTorch s | PyTorch tok/s | nlpd/PyTorch | same ids |")
print("|----------|----------:|--------------:|-------:|-----------:|----------:|--------------:|-------------:|---------:|")
for mode, n, tok, a, b, agree, first, best in rows:
    print(f"| {mode:8s} | {n:9d} | {tok:13d} | {a:6.2f} | {tok / a:10.1f} | {b:9.2f} | {tok / b:13.1f} | "
          f"{b / a:11.2f}x | {100 * agree / n:7.1f}% |")
for mode, n, tok, a, b, agree, first, (ba, bb) in rows:
    print(f"{mode}: nlpd / PyTorch target tokens/s: {b / a:.2f}x (best runs: nlpd {tok / ba:.1f}, PyTorch "
          f"{tok / bb:.1f} tok/s, {bb / ba:.2f}x); output ids equal on {agree}/{n} sentences ({100 * agree / n:.1f}%), "
          f"first target token on {first}/{n}")
print("published, not measured here (CTranslate2's benchmark, real OPUS-MT model and text, other CPU): "
      "CTranslate2 int8 696, Marian 344.5, transformers 147 target tokens/s on 4 threads")
PYEOF
