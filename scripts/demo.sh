#!/bin/sh
# `make demo`: the pipeline on its built-in defaults over the bundled multilingual sample records
# (conf/demo-records.jsonl, three of them deliberately bad): the enriched records, then the dead letters on
# stdout, then a summary of what the stages found on stderr. tests/integration/test_demo.sh runs this script.
set -eu
cd "$(dirname "$0")/.."
exec build/nlpd demo "$@"
