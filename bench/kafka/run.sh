#!/bin/sh
# bench/kafka: end-to-end records/s through an embedded (in-process mock) broker, `nlpd run` with the
# langid pipeline against a plain consume-and-produce passthrough with the same delivery discipline, in
# one command on the same input. See README.md beside this file.
set -eu
cd "$(dirname "$0")/../.."
RUNS=${BENCH_RUNS:-5}
CONF=${BENCH_CONF:-bench/langid/langid-2t.conf}
[ -f build/corpus/bench100k.jsonl ] || sh scripts/make-corpora.sh
[ -x build/bench/bench_kafka ] || make --no-print-directory build/bench/bench_kafka
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "pipeline: $CONF"
build/bench/bench_kafka "$CONF" build/corpus/bench100k.jsonl "$RUNS"
