#!/bin/bash
# The ner stage's `word` on a SentencePiece (XLM-R) token-classification model, end to end through `nlpd pipe`:
# an XLMRobertaForTokenClassification folder made here from the xlm-roberta-seq-cls fixture (its encoder, a seeded
# random 9-label head), once with tokenizer.json and once with only sentencepiece.bpe.model. With no label ignored,
# aggregation "none" must give each token's string (convert_ids_to_tokens) and "simple" each group's
# Decoder.decode(tokens) of the Rust library (npm tokenizers@0.23.2), where the raw text span was given before
# (`' S'` for `▁S`). Usage: test_ner_words.sh NLPD
set -u
. tests/lib.sh
NOK_MAX=2000
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
NPM=$ROOT/build/npm-tokenizers/node_modules/tokenizers
FIX=tests/fixtures/hf-tiny/xlm-roberta-seq-cls
PY=/usr/bin/python3
if ! "$PY" -c 'import numpy' 2>/dev/null || ! command -v node >/dev/null 2>&1 || [ ! -d "$NPM" ]; then
    echo "skip: needs $PY with numpy, node and $NPM (tests/models/test_tokenizer_ref.sh installs it)"
    finish
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

mkdir -p "$W/json" "$W/legacy"
cp "$FIX"/* "$W/json/"
"$PY" - "$FIX" "$W/json" <<'EOF' || { nok "make the token-classification folder" "python failed"; finish; }
import json, struct, sys
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
b = open(src + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
data = b[8 + n:]
t = {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dtype={"F32": np.float32, "I64": np.int64}[v["dtype"]]).reshape(v["shape"]) for k, v in h.items() if not k.startswith("classifier.")}
cfg = json.load(open(src + "/config.json"))
H = cfg["hidden_size"]
rng = np.random.default_rng(16)
t["classifier.weight"] = rng.normal(0, 2.0, (9, H)).astype(np.float32)
t["classifier.bias"] = rng.normal(0, 0.5, (9,)).astype(np.float32)
labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
cfg["architectures"] = ["XLMRobertaForTokenClassification"]
cfg["id2label"] = {str(i): l for i, l in enumerate(labels)}
cfg["label2id"] = {l: i for i, l in enumerate(labels)}
cfg.pop("problem_type", None)
json.dump(cfg, open(dst + "/config.json", "w"))
hdr, blobs, off = {}, [], 0
for k in sorted(t):
    a = np.ascontiguousarray(t[k]); bb = a.tobytes()
    hdr[k] = {"dtype": "F32" if a.dtype == np.float32 else "I64", "shape": list(a.shape), "data_offsets": [off, off + len(bb)]}
    blobs.append(bb); off += len(bb)
hj = json.dumps(hdr).encode(); hj += b" " * (-len(hj) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))
EOF
rm -f "$W/json/golden.json"
for f in config.json model.safetensors sentencepiece.bpe.model tokenizer_config.json special_tokens_map.json; do
    cp "$W/json/$f" "$W/legacy/"
done

cat >"$W/in.jsonl" <<'EOF'
{"text": "John Smith lives in New York."}
{"text": "Angela Merkel besuchte München und Köln."}
{"text": "Barack   Obama  met    Putin. Don't stop!"}
{"text": "Emma 🙂 flew to Berlin🎉 today, naïve café 東京"}
{"text": "Владимир Путин приехал в Москву; 김연아 lives in 서울."}
EOF

for variant in json legacy; do
    for agg in none simple; do
        printf 'pipeline = ( { stage = "ner"; model = "%s"; aggregation = "%s"; ignore_labels = []; } );\n' \
            "$W/$variant" "$agg" >"$W/c.conf"
        if ! timeout 120 "$NLPD" pipe -c "$W/c.conf" <"$W/in.jsonl" >"$W/$variant-$agg.out" 2>"$W/err"; then
            nok "$variant $agg: nlpd pipe" "$(cat "$W/err")"
            continue
        fi
        timeout 60 "$NLPD" tokenize --model "$W/json" <"$W/in.jsonl" >"$W/tok.out"
        if msg=$(node - "$NPM" "$W/json/tokenizer.json" "$W/in.jsonl" "$W/tok.out" "$W/$variant-$agg.out" "$agg" <<'JS'
const { Tokenizer } = require(process.argv[2]);
const fs = require('fs');
const tk = Tokenizer.fromFile(process.argv[3]), dec = tk.getDecoder(), unk = tk.tokenToId('<unk>');
const rd = (f) => fs.readFileSync(f, 'utf8').split('\n').filter((l) => l.length).map((l) => JSON.parse(l));
const texts = rd(process.argv[4]), toks = rd(process.argv[5]), outs = rd(process.argv[6]), agg = process.argv[7];
let n = 0, bad = [];
for (let i = 0; i < texts.length; i++) {
    const t = toks[i], ents = outs[i].entities || [];
    // content tokens (offsets not [0, 0]) in order; the unknown token's word is its text span (code points)
    const c = [], cps = Array.from(texts[i].text);
    for (let k = 0; k < t.ids.length; k++) {
        const [s, e] = t.offsets[k];
        if (e > 0) c.push({ tok: t.ids[k] === unk ? cps.slice(s, e).join('') : t.tokens[k], s, e });
    }
    if (agg === 'none' && ents.length !== c.length) bad.push(`text ${i}: ${ents.length} entities for ${c.length} tokens`);
    let k = 0;
    for (const x of ents) {
        let want;
        if (agg === 'none') {
            want = c[k++].tok;
        } else {
            const g = [];
            while (k < c.length && c[k].e <= x.end) g.push(c[k++].tok);
            want = dec.decode(g);
        }
        n++;
        if (x.word !== want) bad.push(`text ${i} ${JSON.stringify(x)}: want ${JSON.stringify(want)}`);
    }
}
console.log(`${n} words`);
if (bad.length) { console.log(bad.slice(0, 5).join('\n')); process.exit(1); }
JS
        ); then
            ok "$variant $agg: $msg equal transformers' (Rust decoder)"
        else
            nok "$variant $agg" "$msg"
        fi
    done
done
finish
