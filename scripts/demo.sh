#!/bin/sh
# `make demo`: the pipeline on its built-in defaults over the bundled multilingual sample records
# (conf/demo-records.jsonl, three of them deliberately bad), enriched records on stdout and a
# one-line throughput and latency summary at the end.
set -eu
cd "$(dirname "$0")/.."
exec build/nlpd demo "$@"
