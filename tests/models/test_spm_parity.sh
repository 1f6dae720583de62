#!/bin/sh
# SentencePiece (Unigram and BPE) and Marian tokenizer parity (build/tests/tool_spm) with Debian's python3-sentencepiece 0.1.97 and a
# Python re-implementation of transformers' slow MarianTokenizer (v4.47) on top of it (tests/models/spm_ref.py):
# pieces, ids and decode_pieces of every fixture and real OPUS-MT model plus trained/patched model variants over
# the cases texts, invalid UTF-8 and random id lists; Marian ids (with truncation), the golden input_ids and
# decode. Run from the repo root. Needs /usr/bin/python3 with the sentencepiece module (scripts/setup-deps.sh).
set -u
TOOL=build/tests/tool_spm
PY=/usr/bin/python3

skip() {
    echo "skip: $1"
    echo "0 passed, 0 failed"
    exit 0
}

[ -x "$PY" ] || skip "$PY is missing"
"$PY" -c 'import sentencepiece' 2>/dev/null || skip "python3-sentencepiece is not installed (scripts/setup-deps.sh)"
[ -x "$TOOL" ] || make -s "$TOOL" >/dev/null || { echo "cannot build $TOOL"; echo "0 passed, 1 failed"; exit 1; }
exec "$PY" tests/models/spm_ref.py "$TOOL" tests/fixtures/hf-tiny "${NLPD_SHARED:-/work/shared}"
