#!/bin/sh
# bench/cache: `nlpd pipe` throughput on a stream where half the texts repeat earlier ones, with the
# result cache off, in memory, and in Redis, in one command on the same input. The pipeline is langid +
# a transformer sentiment model (6 layers, hidden 384, random weights written by bench/encoder's
# generator, the fixture's WordPiece tokenizer), where a cache hit saves real work.
set -eu
cd "$(dirname "$0")/../.."
RUNS=${BENCH_RUNS:-3}
PY=/usr/bin/python3
W=build/bench-cache
MODEL=$W/model-L6-H384
mkdir -p "$W"
[ -x build/nlpd ] || make --no-print-directory build/nlpd
[ -f build/corpus/multilingual.jsonl ] || sh scripts/make-corpora.sh
if [ ! -f "$MODEL/model.safetensors" ]; then
    $PY bench/encoder/gen_model.py "$MODEL" --layers 6 --hidden 384 --heads 6 --ffn 1536 --vocab 1000 --labels 2
    for f in tokenizer.json vocab.txt tokenizer_config.json special_tokens_map.json; do
        cp tests/fixtures/hf-tiny/bert-seq-cls/$f "$MODEL/"
    done
fi
# 2000 distinct texts, each appearing twice, the second time later in the stream.
$PY - "$W/stream.jsonl" << 'PY'
import json, random, sys
lines = [json.loads(l) for l in open("build/corpus/multilingual.jsonl")][:2000]
order = list(range(len(lines))) * 2
random.Random(7).shuffle(order)
seen = set()
with open(sys.argv[1], "w") as f:
    for k, i in enumerate(order):
        f.write(json.dumps({"id": str(k), "text": lines[i]["text"]}, ensure_ascii=False) + "\n")
PY

port=
redis_pid=
if command -v redis-server > /dev/null 2>&1; then
    port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no > "$W/redis.log" 2>&1 &
    redis_pid=$!
    trap 'kill $redis_pid 2> /dev/null || true' EXIT
    sleep 0.5
fi

conf() { # backend
    cat << EOF
cache: { backend = "$1"; redis = "127.0.0.1:${port:-6379}"; key_prefix = "bench:$(date +%s%N):"; timeout_ms = 200; };
kernels: { threads = 2; };
batch: { max_records = 32; max_wait_ms = 10; };
log: { level = "notice"; };
pipeline = (
  { stage = "langid"; model = "models/lid.176.ftz"; },
  { stage = "sentiment"; model = "$MODEL"; }
);
EOF
}

echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "stream: $(wc -l < "$W/stream.jsonl") records, 50% repeats; median of $RUNS runs each"
printf '%-10s %10s %12s %9s %s\n' backend "median s" "records/s" speedup "cache (sentiment)"
base=
for b in none memory redis; do
    if [ "$b" = redis ] && [ -z "$redis_pid" ]; then
        echo "redis      skipped: no redis-server"
        continue
    fi
    times=
    stats=
    for r in $(seq "$RUNS"); do
        conf "$b" > "$W/$b.conf"
        t0=$($PY -c 'import time; print(time.perf_counter())')
        if ! build/nlpd pipe -c "$W/$b.conf" < "$W/stream.jsonl" > "$W/$b.out" 2> "$W/$b.err"; then
            echo "$b: nlpd failed: $(tail -n 2 "$W/$b.err")"
            exit 1
        fi
        t1=$($PY -c 'import time; print(time.perf_counter())')
        times="$times $($PY -c "print($t1 - $t0)")"
        stats=$(grep -o 'cache sentiment: .*' "$W/$b.err" | tail -n 1)
    done
    med=$($PY -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" $times)
    n=$(wc -l < "$W/stream.jsonl")
    [ -n "$base" ] || base=$med
    printf '%-10s %10.3f %12.0f %8.2fx %s\n' "$b" "$med" "$($PY -c "print($n / $med)")" \
        "$($PY -c "print($base / $med)")" "${stats:--}"
done
# The outputs must not depend on the cache: same labels; scores equal up to the float noise of batching
# (a record's padded batch differs between runs, and with it BLAS's summation order).
for b in memory redis; do
    [ -f "$W/$b.out" ] || continue
    $PY - "$W/none.out" "$W/$b.out" << 'PY' || exit 1
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b)
for x, y in zip(a, b):
    for f in ("lang", "sentiment"):
        if x[f] is None or y[f] is None:
            assert x[f] == y[f], (x, y)
            continue
        k = "code" if f == "lang" else "label"
        assert x[f][k] == y[f][k] and abs(x[f]["score"] - y[f]["score"]) < 1e-5, (x[f], y[f])
PY
done
echo "outputs equal with and without the cache (labels identical, scores within 1e-5)"
