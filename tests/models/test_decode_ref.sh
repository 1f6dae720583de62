#!/bin/sh
# Decoder parity with the Rust `tokenizers` library (npm tokenizers@0.23.2, as test_tokenizer_ref.sh installs it):
# `nlpd tokenize --decode` against Tokenizer.decode(ids, skip_special_tokens) (+ transformers' clean_up_tokenization
# when tokenizer_config.json asks for it) and against Decoder.decode(tokens) (convert_tokens_to_string), exact string
# equality. Inputs: the ids of the 4321 cases (_tokenizer_cases/cases.json: bert, xlmr, bpe; the other tokenizers
# get the Rust encoding of the case texts), skip_special_tokens false and true, seeded random id sequences and
# token lists; the fixture tokenizers' own decoders (WordPiece, Metaspace, ByteLevel), their legacy folders, and
# variants of them with every other decoder (BPEDecoder, ByteFallback, Fuse, Strip, Replace, CTC, Sequence).
# First, without node: transformers' decoded translations of the nllb-mt golden. Run from the repo root.
set -u
. tests/lib.sh
ROOT=$(pwd)
FIX=tests/fixtures/hf-tiny
NPM_DIR=build/npm-tokenizers
NLPD=${1:-build/nlpd}
WORK=build/decode-ref

skip() {
    echo "skip: $1"
    finish
}

[ -x "$NLPD" ] || { echo "$NLPD is not built"; echo "0 passed, 1 failed"; exit 1; }

# transformers' own decoded outputs (nllb-mt golden.json: batch_decode(generate ids, skip_special_tokens=True))
# against `nlpd tokenize --decode` on the folder's tokenizer.json: what the translate output gets.
rm -rf "$WORK" && mkdir -p "$WORK"
if python3 - "$FIX/nllb-mt/golden.json" >"$WORK/nllb.in" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
for ex in g["examples"]:
    for k, t in (("generate_output_ids", "generate_decoded_text"), ("beam_output_ids", "beam_decoded_text")):
        ids = ex[k][0] if ex[k] and isinstance(ex[k][0], list) else ex[k]
        print(json.dumps({"ids": ids, "skip_special_tokens": True, "want": ex[t]}))
PY
then
    timeout 60 "$NLPD" tokenize --decode --model "$FIX/nllb-mt" <"$WORK/nllb.in" >"$WORK/nllb.got"
    if python3 -c '
import json, sys
a = [json.loads(l)["want"] for l in open(sys.argv[1])]
b = [json.loads(l).get("text") for l in open(sys.argv[2])]
print("nllb-mt: %d/%d decoded outputs equal transformers\x27" % (sum(x == y for x, y in zip(a, b)), len(a)))
sys.exit(0 if a == b and len(a) == 16 else 1)' "$WORK/nllb.in" "$WORK/nllb.got"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
    fi
else
    echo "nllb-mt golden: cannot read"
    fail=$((fail + 1))
fi

command -v node >/dev/null 2>&1 || skip "node is not installed"
if [ ! -d "$NPM_DIR/node_modules/tokenizers" ]; then
    command -v npm >/dev/null 2>&1 || skip "npm is not installed"
    timeout 300 npm install --no-audit --no-fund --prefix "$NPM_DIR" tokenizers@0.23.2 >/dev/null 2>&1 ||
        skip "npm install tokenizers@0.23.2 failed (offline?)"
fi
node -e "require('$ROOT/$NPM_DIR/node_modules/tokenizers')" 2>/dev/null || skip "the tokenizers binding does not load"

# Variants: a fixture's tokenizer.json with another decoder (and, for ByteFallback, byte tokens added).
node -e '
const fs = require("fs");
const [fix, work] = process.argv.slice(1);
const load = (d) => JSON.parse(fs.readFileSync(fix + "/" + d + "/tokenizer.json", "utf8"));
const R = (s) => ({ String: s });
const X = (s) => ({ Regex: s });
const v = {
    "llama-seq": ["xlm-roberta-seq-cls", { type: "Sequence", decoders: [
        { type: "Replace", pattern: R("\u2581"), content: " " }, { type: "ByteFallback" }, { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 }] }, true],
    "metaspace-never": ["xlm-roberta-seq-cls", { type: "Metaspace", replacement: "\u2581", prepend_scheme: "never",
        split: true }],
    "metaspace-first": ["deberta-v2-token-cls", { type: "Metaspace", replacement: "e", prepend_scheme: "first",
        split: false }],
    "metaspace-old": ["xlm-roberta-seq-cls", { type: "Metaspace", replacement: "\u2581", add_prefix_space: true }],
    "bpe-suffix": ["_bpe_tokenizer", { type: "BPEDecoder", suffix: "e" }],
    "bpe-default": ["bert-seq-cls", { type: "BPEDecoder", suffix: "</w>" }],
    "wordpiece-raw": ["bert-seq-cls", { type: "WordPiece", prefix: "##", cleanup: false }],
    "wordpiece-prefix": ["bert-seq-cls", { type: "WordPiece", prefix: "e", cleanup: true }],
    "ctc": ["bert-seq-cls", { type: "CTC", pad_token: "[PAD]", word_delimiter_token: "##", cleanup: true }],
    "regex-strip": ["bert-seq-cls", { type: "Sequence", decoders: [
        { type: "WordPiece", prefix: "##", cleanup: false }, { type: "Replace", pattern: X("[aeiou]+|\\s(?=\\W)"),
        content: "_" }, { type: "Strip", content: "x", start: 2, stop: 0 },
        { type: "Strip", content: "[", start: 1, stop: 0 }] }],
    "bytelevel-seq": ["_bpe_tokenizer", { type: "Sequence", decoders: [{ type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
        { type: "Strip", content: " ", start: 3, stop: 0 }, { type: "Replace", pattern: X("\\s+"), content: "_" }] }],
    "fallback-level": ["_bpe_tokenizer", { type: "Sequence", decoders: [{ type: "ByteFallback" },
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }] }, true],
    "no-decoder": ["bert-seq-cls", null],
    // Strip: stop only 1 on non-empty tokens: the npm build (unlike the current strip.rs) panics when it runs
    // out of chars.
    "strip-stop": ["bert-seq-cls", { type: "Sequence", decoders: [{ type: "Strip", content: "s", start: 0, stop: 1 },
        { type: "Strip", content: "#", start: 2, stop: 0 }, { type: "WordPiece", prefix: "##", cleanup: true }] }],
};
const bytes = ["<0x41>", "<0xE5>", "<0x8f>", "<0xab>", "<0x+5>", "<0xZZ>", "<0xC3>", "<0xA9>", "<0xFF>", "<0x0a>"];
for (const [name, [src, dec, addBytes]] of Object.entries(v)) {
    const t = load(src);
    t.decoder = dec;
    if (addBytes) {
        const mv = t.model.vocab, ids = Array.isArray(mv) ? [mv.length - 1] : Object.values(mv);
        let id = 1 + Math.max(...ids, ...t.added_tokens.map((a) => a.id));
        for (const b of bytes) t.added_tokens.push({ id: id++, content: b, single_word: false, lstrip: false,
            rstrip: false, normalized: false, special: false });
    }
    fs.mkdirSync(work + "/" + name, { recursive: true });
    fs.writeFileSync(work + "/" + name + "/tokenizer.json", JSON.stringify(t));
}
' "$FIX" "$WORK" || { echo "cannot write the variants"; echo "0 passed, 1 failed"; exit 1; }

# The reference and the inputs: JSON lines {"ids", "skip_special_tokens"} or {"tokens"} and the expected text.
cat >"$WORK/ref.js" <<'JS'
const { Tokenizer } = require(process.argv[2]);
const fs = require('fs');
const [, , , dir, casesFile, key, out] = process.argv;
const t = Tokenizer.fromFile(dir + '/tokenizer.json');
let cfg = {};
try { cfg = JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json', 'utf8')); } catch (e) { }
// transformers' clean_up_tokenization (no "do not" rule, unlike the WordPiece decoder's cleanup)
const cleanUp = (s) => [[' .', '.'], [' ?', '?'], [' !', '!'], [' ,', ','], [" ' ", "'"], [" n't", "n't"],
    [" 'm", "'m"], [" 's", "'s"], [" 've", "'ve"], [" 're", "'re"]].reduce((a, [f, r]) => a.split(f).join(r), s);
const cases = JSON.parse(fs.readFileSync(casesFile, 'utf8'));
const nids = t.getVocabSize(true);
let seed = 12345;
const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
const dec = t.getDecoder();
const extra = ['\u2581', '\u2581\u2581x', '##', '##a', ' ', 'e', '<0x41>', '<0xE5>', '<0x8f>', '<0xab>', 'Ġ',
    'Ċ', 'naïve', '東京', '[PAD]', 'x[x', ' .', " n't", ' do not', '</w>', 'a\u2581b', '\u00e9\u0301', '🙂'];
(async () => {
    const lines = [], want = [];
    const idsCase = async (ids, skip) => {
        let s = await t.decode(ids, skip);
        if (cfg.clean_up_tokenization_spaces === true) s = cleanUp(s);
        lines.push(JSON.stringify({ ids, skip_special_tokens: skip }));
        want.push(s);
    };
    for (const c of cases) {
        const ids = key ? c[key] : (await t.encode(c.text)).getIds();
        await idsCase(ids, false);
        await idsCase(ids, true);
    }
    for (let i = 0; i < 300; i++) {
        const ids = [];
        for (let k = rnd(25); k > 0; k--) ids.push(rnd(8) === 0 ? nids + rnd(3) : rnd(nids));
        await idsCase(ids, i % 2 === 1);
    }
    for (let i = 0; i < 300; i++) {
        const toks = [];
        for (let k = rnd(12); k > 0; k--)
            toks.push(rnd(3) === 0 ? extra[rnd(extra.length)] : (t.idToToken(rnd(nids)) || 'z'));
        lines.push(JSON.stringify({ tokens: toks }));
        want.push(dec ? dec.decode(toks) : toks.join(' '));
    }
    fs.writeFileSync(out + '.in', lines.join('\n') + '\n');
    fs.writeFileSync(out + '.want', want.map((s) => JSON.stringify({ text: s })).join('\n') + '\n');
})();
JS

compare() { # name want got in
    node -e '
const fs = require("fs");
const rd = (f) => fs.readFileSync(f, "utf8").split("\n").filter((l) => l.length);
const a = rd(process.argv[1]), b = rd(process.argv[2]), inp = rd(process.argv[4]);
let ok = 0, shown = 0;
for (let i = 0; i < a.length; i++) {
    let same = false;
    try { same = JSON.parse(a[i]).text === JSON.parse(b[i]).text; } catch (e) { }
    if (same) { ok++; continue; }
    if (shown++ < 3) console.error(process.argv[3] + " line " + (i + 1) + ": " + inp[i].slice(0, 200) +
        "\n  rust: " + a[i].slice(0, 200) + "\n  nlpd: " + (b[i] || "(none)").slice(0, 200));
}
console.log(process.argv[3] + ": " + ok + "/" + a.length + " identical");
process.exit(ok === a.length && b.length === a.length ? 0 : 1);
' "$2" "$3" "$1" "$4"
}

check() { # name dir cases-key
    name=$1 dir=$2 key=$3
    node "$WORK/ref.js" "$ROOT/$NPM_DIR/node_modules/tokenizers" "$dir" "$FIX/_tokenizer_cases/cases.json" "$key" \
        "$WORK/$name" || { echo "$name: reference failed"; fail=$((fail + 1)); return; }
    timeout 120 "$NLPD" tokenize --decode --model "$dir" <"$WORK/$name.in" >"$WORK/$name.got"
    if compare "$name" "$WORK/$name.want" "$WORK/$name.got" "$WORK/$name.in"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}

check bert-seq-cls "$FIX/bert-seq-cls" bert
check xlm-roberta-seq-cls "$FIX/xlm-roberta-seq-cls" xlmr
check _bpe_tokenizer "$FIX/_bpe_tokenizer" bpe
check deberta-v2-token-cls "$FIX/deberta-v2-token-cls" ""
check nllb-mt "$FIX/nllb-mt" ""
# The legacy files of the same folders decode with the decoder transformers' converters give them.
for d in bert-seq-cls xlm-roberta-seq-cls _bpe_tokenizer; do
    leg="$WORK/legacy-$d"
    mkdir -p "$leg"
    for f in vocab.txt sentencepiece.bpe.model vocab.json merges.txt tokenizer_config.json special_tokens_map.json; do
        [ -f "$FIX/$d/$f" ] && cp "$FIX/$d/$f" "$leg/"
    done
    # the reference reads the fixture's tokenizer.json; nlpd gets the folder without it
    mkdir -p "$leg.ref"
    cp "$FIX/$d/tokenizer.json" "$FIX/$d/tokenizer_config.json" "$leg.ref/"
    node "$WORK/ref.js" "$ROOT/$NPM_DIR/node_modules/tokenizers" "$leg.ref" "$FIX/_tokenizer_cases/cases.json" "" \
        "$WORK/legacy-$d" || { echo "legacy-$d: reference failed"; fail=$((fail + 1)); continue; }
    timeout 120 "$NLPD" tokenize --decode --model "$leg" <"$WORK/legacy-$d.in" >"$WORK/legacy-$d.got"
    if compare "legacy-$d" "$WORK/legacy-$d.want" "$WORK/legacy-$d.got" "$WORK/legacy-$d.in"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
    fi
done
for v in llama-seq metaspace-never metaspace-first metaspace-old bpe-suffix bpe-default wordpiece-raw \
    wordpiece-prefix ctc regex-strip strip-stop bytelevel-seq fallback-level no-decoder; do
    check "variant-$v" "$WORK/$v" ""
done
finish
