#!/bin/sh
# Loading what the Hub has: every fixture model (M2M100 / NLLB included) written by Debian's PyTorch (torch.save
# of its state dict) as pytorch_model.bin, with tensors as views into one storage and a tied name, in torch's
# pre-1.6 format, as
# float16, as sharded safetensors (model.safetensors.index.json) and sharded .bin (pytorch_model.bin.index.json);
# `nlpd infer` must print exactly
# what it prints for the model.safetensors original (float16: what it prints for the same float16 weights in
# safetensors). Files that are not a state dict (a pickle calling os.system, a non-contiguous tensor) must be
# refused with an error naming the problem, and nothing of the pickle may run.
# Also the real Hub file of shared/models/ner/camphr-tiny-bert-token-classification. Usage: test_torch_bin.sh NLPD
set -u
. tests/lib.sh
NLPD=${1:-build/nlpd}
FIX=tests/fixtures/hf-tiny
PY=/usr/bin/python3
TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT

bad() { echo "FAIL - $1"; fail=$((fail + 1)); }

if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
    echo "skip: $PY has no torch/numpy (Debian's python3-torch, python3-numpy: make deps)"
    echo "0 passed, 0 failed"
    exit 0
fi

cat >"$TMP/texts.jsonl" <<'EOF'
{"text": "Hello world, this is a test."}
{"text": "Angela Merkel visited Paris", "text_pair": "the capital of France"}
{"text": "naïve café 東京 🙂"}
EOF

for m in bert-seq-cls bert-token-cls distilbert-seq-cls xlm-roberta-seq-cls marian-mt m2m100-mt nllb-mt; do
    out=$TMP/$m
    if ! timeout 300 "$PY" tests/models/make_torch_bin.py "$FIX/$m" "$out" 2>"$TMP/py.err"; then
        bad "$m: make_torch_bin.py failed: $(tail -n 1 "$TMP/py.err")"
        continue
    fi
    opts=
    [ "$m" = marian-mt ] && opts="--max-length 12"
    [ "$m" = m2m100-mt ] && opts="--max-length 12"
    [ "$m" = nllb-mt ] && opts="--max-length 12 --tgt-lang fra_Latn"
    run() { timeout 120 "$NLPD" infer --model "$1" $opts <"$TMP/texts.jsonl" 2>"$TMP/err"; }
    run "$FIX/$m" >"$TMP/ref.out" || { bad "$m: the safetensors original fails: $(cat "$TMP/err")"; continue; }
    [ -s "$TMP/ref.out" ] && ! grep -q '"error"' "$TMP/ref.out" || { bad "$m: no reference output"; continue; }
    for v in bin bin-views bin-legacy sharded bin-sharded; do
        if run "$out/$v" >"$TMP/got.out" && cmp -s "$TMP/ref.out" "$TMP/got.out"; then
            ok "$m $v: identical output"
        else
            bad "$m $v: output differs or fails: $(head -c 300 "$TMP/err") $(head -c 300 "$TMP/got.out")"
        fi
    done
    if run "$out/st-half" >"$TMP/half.ref" && run "$out/bin-half" >"$TMP/half.got" && cmp -s "$TMP/half.ref" "$TMP/half.got"; then
        ok "$m bin-half: identical to the same float16 weights in safetensors"
    else
        bad "$m bin-half: differs from st-half: $(head -c 300 "$TMP/err")"
    fi
    for v in "bad-global:global posix.system is not allowed" "bad-strided:tensor is not contiguous"; do
        d=${v%%:*} want=${v#*:}
        if run "$out/$d" >"$TMP/got.out"; then
            bad "$m $d: accepted"
        elif grep -q "pytorch_model.bin: .*$want" "$TMP/err"; then
            ok "$m $d: refused ($want)"
        else
            bad "$m $d: unexpected error: $(cat "$TMP/err")"
        fi
    done
    [ -e "$out/PWNED" ] && bad "$m: the pickle ran code"
done

# A file written by the Hub's own tooling (transformers 4.8.2, older torch), beside its converted safetensors.
C=../shared/models/ner/camphr-tiny-bert-token-classification
if [ -f "$C/pytorch_model.bin" ]; then
    mkdir -p "$TMP/camphr"
    cp "$C/config.json" "$C/vocab.txt" "$C/tokenizer_config.json" "$C/special_tokens_map.json" "$C/pytorch_model.bin" \
        "$TMP/camphr/"
    if timeout 60 "$NLPD" infer --model "$C" <"$TMP/texts.jsonl" >"$TMP/ref.out" 2>"$TMP/err" &&
        timeout 60 "$NLPD" infer --model "$TMP/camphr" <"$TMP/texts.jsonl" >"$TMP/got.out" 2>>"$TMP/err" &&
        cmp -s "$TMP/ref.out" "$TMP/got.out"; then
        ok "camphr pytorch_model.bin from the Hub: identical to its safetensors"
    else
        bad "camphr pytorch_model.bin: $(head -c 300 "$TMP/err")"
    fi
else
    echo "skip: $C not fetched (make models)"
fi

# DistilBERT with sinusoidal_pos_embds: the flag only initialises the position table, which the checkpoint stores
# (save_pretrained writes it; from_pretrained loads it): the same output as without the flag.
mkdir -p "$TMP/sin" && cp "$FIX/distilbert-seq-cls"/* "$TMP/sin/"
sed 's/"sinusoidal_pos_embds": false/"sinusoidal_pos_embds": true/' "$FIX/distilbert-seq-cls/config.json" >"$TMP/sin/config.json"
if grep -q '"sinusoidal_pos_embds": true' "$TMP/sin/config.json" &&
    "$NLPD" infer --model "$FIX/distilbert-seq-cls" <"$TMP/texts.jsonl" >"$TMP/ref.out" 2>"$TMP/err" &&
    "$NLPD" infer --model "$TMP/sin" <"$TMP/texts.jsonl" >"$TMP/got.out" 2>>"$TMP/err" && cmp -s "$TMP/ref.out" "$TMP/got.out"; then
    ok "distilbert sinusoidal_pos_embds: loads, the stored table is used"
else
    bad "distilbert sinusoidal_pos_embds: $(head -c 300 "$TMP/err")"
fi

# Neither file: the error names what was looked for.
mkdir -p "$TMP/none" && cp "$FIX/bert-seq-cls/config.json" "$FIX/bert-seq-cls/vocab.txt" "$TMP/none/"
if ! "$NLPD" infer --model "$TMP/none" </dev/null 2>"$TMP/err" >/dev/null &&
    grep -q "model.safetensors: no such file, nor model.safetensors.index.json, pytorch_model.bin" "$TMP/err"; then
    ok "no weights: the error lists the files looked for"
else
    bad "no weights: $(cat "$TMP/err")"
fi
finish
