#!/usr/bin/python3
"""Parity of nlpd's SentencePiece and Marian tokenizers (build/tests/tool_spm) with Debian's python3-sentencepiece
0.1.97 and a small re-implementation of transformers' slow MarianTokenizer (v4.47) on top of it.

usage: spm_ref.py TOOL FIXTURE_DIR [SHARED_DIR]
Prints one line per check group and `N passed, N failed` at the end (exit 1 on a failure). Run with /usr/bin/python3
(the Debian interpreter that has the sentencepiece module)."""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

import sentencepiece as spm

TOOL, FIX = sys.argv[1], sys.argv[2]
SHARED = sys.argv[3] if len(sys.argv) > 3 else "/work/shared"
passed = failed = 0
shown = 0


def check(ok, what):
    global passed, failed, shown
    if ok:
        passed += 1
        return
    failed += 1
    if shown < 25:
        shown += 1
        print("FAIL", what[:600])


def run_tool(mode, path, reqs):
    inp = "".join(json.dumps(r) + "\n" for r in reqs)
    p = subprocess.run([TOOL, mode, path], input=inp.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError("%s %s %s: exit %d: %s" % (TOOL, mode, path, p.returncode, p.stderr.decode()[-500:]))
    out = [json.loads(l) for l in p.stdout.decode().splitlines()]
    if len(out) != len(reqs):
        raise RuntimeError("tool answered %d lines for %d requests" % (len(out), len(reqs)))
    return out


def h(b):
    return b.hex()


def u8(s):
    return s.encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------ texts
def texts():
    out = []
    cases = json.load(open(os.path.join(FIX, "_tokenizer_cases", "cases.json"), encoding="utf-8"))
    out += [c["text"] for c in cases]
    corpus = "build/corpus/multilingual.txt"
    if os.path.exists(corpus):
        with open(corpus, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                if i >= 1500:
                    break
                out.append(line.rstrip("\n"))
    out += [
        "", " ", "   ", "\t", "\n", " \u3000 ", "\u00a0a\u00a0", "a  b", "  lead", "trail  ", " a \t b \n c ",
        "\u2581", "\u2581a\u2581", " \u2581 a \u2581 ", "a\u2581\u2581b", "\x00", "a\x00b", "\ufffd", "x\ufffdy",
        "\u200b", " \u200b x", "\u200bx\u200b", "ｈｅｌｌｏ　ｗｏｒｌｄ", "\ufb01ne", "\u2460\u2461", "e\u0301", "\u1100\u1161",
        "\U0001d518\U0001d518 x", "😀👍🏽", "a" * 300, "ab" * 200 + " " + "\u00e9" * 100, ">>fr<< Bonjour", ">>por<< Olá",
        ">>por<<", ">><<", ">>x<<<<y<< z", "a >>fr<< b", ">>fr<<\n>>de<< x", "Hello</s>world", "<unk> and <pad>",
        "</s>", " </s> ", "<s>", "<sep>", "a<sep>b", "@@", "ab@@cd", "<ctl>", "<0x41>", "The database host is "
        "experiencing issues.", "Don't stop, it's fine ; isn't it ? yes !", "  ' quoted ' ",
    ]
    rnd = random.Random(7)
    alphabet = "aeiou xyz\u00e9\u00fc\u4e2d\u6587\u0434\u0430\t\u3000\u2581.,!?'\U0001f600\u0301\u00a0"
    for _ in range(300):
        out.append("".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40))))
    return out


def bad_bytes():
    rnd = random.Random(11)
    out = [b"\xff", b"a\xffb", b"\xe2\x82", b"abc\xe2\x96", b"\xc0\x80", b"\xed\xa0\x80x", b"\xf4\x90\x80\x80",
           b"\xf8\x88\x80\x80\x80", b"  \xff  \xfe ", b"\xe2\x96\x81\xff"]
    for _ in range(60):
        out.append(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 24))))
    return out


# ------------------------------------------------------------------ SentencePiece parity
def spm_suite(name, path, txts, bads):
    sp = spm.SentencePieceProcessor(model_file=path)
    reqs = [{"hex": h(u8(t))} for t in txts] + [{"hex": h(b)} for b in bads]
    rnd = random.Random(3)
    n = sp.get_piece_size()
    idlists = [[rnd.randrange(n) for _ in range(rnd.randint(0, 12))] for _ in range(300)]
    idlists += [[i] for i in range(min(n, 300))]
    idlists += [[sp.unk_id(), sp.unk_id()], [0, 1, 2, 3], list(range(min(n, 40)))]
    reqs += [{"decode_ids": ids} for ids in idlists]
    got = run_tool("spm", path, reqs)
    p0, f0 = passed, failed
    k = 0
    for t in txts:
        g = got[k]
        k += 1
        if "error" in g:
            check(False, "%s: %r: error %s" % (name, t, g["error"]))
            continue
        pieces = sp.encode(t, out_type=str)
        ids = sp.encode(t)
        gp = [bytes.fromhex(x) for x in g["pieces"]]
        check(gp == [u8(p) for p in pieces], "%s: pieces of %r: %r != %r" %
              (name, t, [x.decode("utf-8", "replace") for x in gp], pieces))
        check(g["ids"] == ids, "%s: ids of %r: %r != %r" % (name, t, g["ids"], ids))
        dec = sp.decode_pieces(pieces)
        check(bytes.fromhex(g["decoded"]) == u8(dec), "%s: decode_pieces of %r: %r != %r" %
              (name, t, bytes.fromhex(g["decoded"]).decode("utf-8", "replace"), dec))
    for b in bads:
        g = got[k]
        k += 1
        pieces = sp.encode(b, out_type=str)
        ids = sp.encode(b)
        gp = [bytes.fromhex(x) for x in g.get("pieces", [])]
        check(gp == pieces and g.get("ids") == ids, "%s: bytes %r: %r/%r != %r/%r" %
              (name, b, gp, g.get("ids"), pieces, ids))
    for ids in idlists:
        g = got[k]
        k += 1
        want = u8(sp.decode(ids))
        check("decoded" in g and bytes.fromhex(g["decoded"]) == want, "%s: decode(%r): %r != %r" %
              (name, ids, g, want))
    print("%s: %s: %d passed, %d failed (%d texts, %d byte strings, %d id lists)" %
          (name, path, passed - p0, failed - f0, len(txts), len(bads), len(idlists)))


# ------------------------------------------------------------------ model variants (protobuf rewriting)
def varint(b, i):
    v = s = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7f) << s
        s += 7
        if not x & 0x80:
            return v, i


def enc_varint(v):
    out = bytearray()
    while True:
        x = v & 0x7f
        v >>= 7
        if v:
            out.append(x | 0x80)
        else:
            out.append(x)
            return bytes(out)


def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        yield f, wt, v


def field_bytes(f, wt, v):
    key = enc_varint(f << 3 | wt)
    if wt == 0:
        return key + enc_varint(v)
    if wt == 2:
        return key + enc_varint(len(v)) + v
    return key + v


def retype(model, every_unused, every_user):
    """Marks some NORMAL pieces UNUSED or USER_DEFINED (by id), leaves the rest of the proto as it is."""
    out = bytearray()
    idx = 0
    for f, wt, v in fields(model):
        if f == 1 and wt == 2:
            typ = 1
            for f2, wt2, v2 in fields(v):
                if f2 == 3:
                    typ = v2
            if typ == 1 and idx > 10:
                new = 5 if idx % every_unused == 0 else 4 if idx % every_user == 0 else 1
                if new != 1:
                    v = b"".join(field_bytes(f2, wt2, v2) for f2, wt2, v2 in fields(v) if f2 != 3)
                    v += field_bytes(3, 0, new)
            idx += 1
        out += field_bytes(f, wt, v)
    return bytes(out)


def variants(tmp):
    lines = texts()[:4321]
    lines = [l for l in lines if l.strip()]
    kw = dict(vocab_size=1500, model_type="unigram", character_coverage=0.98, minloglevel=2, hard_vocab_limit=False,
              sentence_iterator=iter(lines))
    made = []

    def train(name, **extra):
        import io
        m = io.BytesIO()
        args = dict(kw)
        args["sentence_iterator"] = iter(lines)
        args.update(extra)
        spm.SentencePieceTrainer.train(model_writer=m, **args)
        return m.getvalue()

    a = train("a", user_defined_symbols=["<sep>", "@@", "ab", "\u2581the"], control_symbols=["<ctl>"],
              byte_fallback=True)
    made.append(("trained: user-defined + control + byte_fallback", a))
    b = train("b", add_dummy_prefix=False, remove_extra_whitespaces=False, treat_whitespace_as_suffix=True,
              normalization_rule_name="nfkc_cf")
    made.append(("trained: no dummy prefix, extra whitespace kept, whitespace as suffix, nfkc_cf", b))
    c = train("c", normalization_rule_name="identity")
    made.append(("trained: identity normaliser", c))
    # escape_whitespaces=false (the Unigram trainer refuses it): a second normalizer_spec is merged by protobuf.
    made.append(("patched: escape_whitespaces=false", c + field_bytes(3, 2, field_bytes(5, 0, 0))))
    made.append(("patched: remove_extra_whitespaces=false, add_dummy_prefix=false",
                 a + field_bytes(3, 2, field_bytes(4, 0, 0) + field_bytes(3, 0, 0))))
    made.append(("patched: UNUSED and USER_DEFINED pieces", retype(a, 7, 5)))
    made.append(("patched: UNUSED and USER_DEFINED pieces (no byte_fallback)", retype(c, 5, 3)))
    # a denormalizer: the nfkc_cf charsmap of model b applied to the decoded text (with the default flags)
    charsmap = None
    for f, wt, v in fields(b):
        if f == 3:
            for f2, wt2, v2 in fields(v):
                if f2 == 2:
                    charsmap = v2
    if charsmap:
        made.append(("patched: denormalizer_spec", c + field_bytes(5, 2, field_bytes(2, 2, charsmap))))
        made.append(("patched: unk_surface", c + field_bytes(2, 2, field_bytes(44, 2, "[?]".encode()))))
    paths = []
    for i, (desc, blob) in enumerate(made):
        p = os.path.join(tmp, "variant%d.model" % i)
        with open(p, "wb") as f:
            f.write(blob)
        paths.append((desc, p))
    # BPE (bpe_model.cc): plain, user-defined + byte_fallback, UNUSED pieces (split back by resegment)
    bpe = [("trained BPE", train("bpe", model_type="bpe"))]
    bpe_a = train("bpe_a", model_type="bpe", user_defined_symbols=["<sep>", "@@", "ab", "\u2581the"],
                  control_symbols=["<ctl>"], byte_fallback=True)
    bpe += [("trained BPE: user-defined + control + byte_fallback", bpe_a),
            ("patched BPE: UNUSED and USER_DEFINED pieces", retype(bpe_a, 7, 5))]
    bpe_paths = []
    for i, (desc, blob) in enumerate(bpe):
        p = os.path.join(tmp, "bpe%d.model" % i)
        with open(p, "wb") as f:
            f.write(blob)
        bpe_paths.append((desc, p))
    p = os.path.join(tmp, "word.model")
    with open(p, "wb") as f:
        f.write(train("word", model_type="word"))
    return paths, bpe_paths, p


# ------------------------------------------------------------------ Marian reference (transformers 4.47 slow)
PY_SPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


class MarianRef:
    lang_re = re.compile(">>.+<<")

    def __init__(self, d):
        cfg = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
        smap_p = os.path.join(d, "special_tokens_map.json")
        smap = json.load(open(smap_p, encoding="utf-8")) if os.path.exists(smap_p) else {}

        def role(k, dflt):
            v = smap.get(k, cfg.get(k, dflt))
            return v["content"] if isinstance(v, dict) else v
        self.eos_t, self.unk_t, self.pad_t = role("eos_token", "</s>"), role("unk_token", "<unk>"), role(
            "pad_token", "<pad>")
        self.encoder = json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8"))
        if cfg.get("separate_vocabs"):
            self.decoder = {v: k for k, v in json.load(open(os.path.join(d, "target_vocab.json"))).items()}
        else:
            self.decoder = {v: k for k, v in self.encoder.items()}
        self.src = spm.SentencePieceProcessor(model_file=os.path.join(d, "source.spm"))
        self.tgt = spm.SentencePieceProcessor(model_file=os.path.join(d, "target.spm"))
        self.max_len = cfg.get("model_max_length", 512)
        self.clean = cfg.get("clean_up_tokenization_spaces", False)
        self.added = {}
        for k, v in cfg.get("added_tokens_decoder", {}).items():
            self.added[v["content"]] = (int(k), v)
        self.special = [self.eos_t, self.unk_t, self.pad_t]
        for t in self.special:
            if t not in self.added:
                self.added[t] = (self.encoder[t], {})
        self.special_ids = [self.tok_id(t) for t in self.special]
        self.added_dec = {i: t for t, (i, _) in self.added.items()}

    def tok_id(self, t):
        if t in self.added:
            return self.added[t][0]
        return self.encoder.get(t, self.encoder[self.unk_t])

    def split(self, text):
        toks = sorted(self.added, key=len, reverse=True)
        if not toks:
            return [text]
        pat = re.compile("|".join(re.escape(t) for t in toks))
        out, last = [], 0
        for m in pat.finditer(text):
            out.append(text[last:m.start()])
            out.append(m.group(0))
            last = m.end()
        out.append(text[last:])
        return out

    def encode(self, text, max_length):
        chunks = self.split(text)
        for i, c in enumerate(chunks):
            if c in self.added and i % 2 == 1:
                flags = self.added[c][1]
                if flags.get("rstrip") and i + 1 < len(chunks) and chunks[i + 1]:
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if flags.get("lstrip") and i > 0 and chunks[i - 1]:
                    chunks[i - 1] = chunks[i - 1].rstrip()
        toks = []
        for i, c in enumerate(chunks):
            if not c:
                continue
            if i % 2 == 1:
                toks.append(c)
                continue
            m = self.lang_re.match(c)
            code = [m.group(0)] if m else []
            toks += code + self.src.encode(self.lang_re.sub("", c), out_type=str)
        ids = [self.tok_id(t) for t in toks]
        m = max_length or self.max_len
        if len(ids) + 1 > m:
            rm = len(ids) + 1 - m
            if len(ids) > rm:
                ids = ids[:-rm]
        return ids + [self.tok_id(self.eos_t)]

    def to_string(self, tokens):
        cur, out = [], ""
        for t in tokens:
            if t in self.special:
                out += self.tgt.decode_pieces(cur) + t + " "
                cur = []
            else:
                cur.append(t)
        out += self.tgt.decode_pieces(cur)
        return out.replace("\u2581", " ").strip()

    def decode(self, ids, skip):
        toks = []
        for i in ids:
            if skip and i in self.special_ids:
                continue
            toks.append(self.added_dec[i] if i in self.added_dec else self.decoder.get(i, self.unk_t))
        legacy = set(self.added) - set(self.special)
        subs, cur = [], []
        for t in toks:
            if t in legacy:
                if cur:
                    s = self.to_string(cur)
                    if s:
                        subs.append(s)
                    cur = []
                subs.append(t)
            else:
                cur.append(t)
        if cur:
            subs.append(self.to_string(cur))
        text = " ".join(subs)
        if self.clean:
            text = (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
                    .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
                    .replace(" 've", "'ve").replace(" 're", "'re"))
        return text


def marian_suite(name, d, txts, golden=None):
    ref = MarianRef(d)
    rnd = random.Random(5)
    reqs, want = [], []
    for t in txts:
        ml = rnd.choice([0, 0, 0, 1, 2, 3, 5, 8, 16])
        reqs.append({"hex": h(u8(t)), "max_length": ml})
        want.append(("ids", t, ml, ref.encode(t, ml)))
    if golden:
        for ex in golden:
            reqs.append({"hex": h(u8(ex["text"])), "max_length": 0})
            want.append(("golden", ex["text"], 0, ex["input_ids"]))
    n = max(ref.decoder) + 1
    idlists = [w[3] for w in want[:1500]]
    idlists += [[rnd.randrange(n) for _ in range(rnd.randint(0, 15))] for _ in range(400)]
    idlists += [[ref.special_ids[0], 5, ref.special_ids[1], 7, ref.special_ids[2]]]
    for ids in idlists:
        for skip in (1, 0):
            reqs.append({"decode": ids, "skip": skip})
            want.append(("decode", ids, skip, u8(ref.decode(ids, bool(skip)))))
    reqs.append({"decode": [n], "skip": 1})
    want.append(("range", [n], 1, None))
    reqs.append({"info": 1})
    langs = [k for k in ref.encoder if k.startswith(">>") and k.endswith("<<")]
    want.append(("info", None, None, {"eos": ref.tok_id(ref.eos_t), "pad": ref.tok_id(ref.pad_t),
                                      "unk": ref.tok_id(ref.unk_t), "langs": langs}))
    got = run_tool("marian", d, reqs)
    p0, f0 = passed, failed
    for g, (kind, a, b, w) in zip(got, want):
        if kind in ("ids", "golden"):
            check(g.get("ids") == w, "%s %s: %r (max_length %d): %r != %r" % (name, kind, a, b, g, w))
        elif kind == "decode":
            check("text" in g and bytes.fromhex(g["text"]) == w, "%s decode(%r, skip=%d): %r != %r" %
                  (name, a, b, bytes.fromhex(g["text"]).decode("utf-8", "replace") if "text" in g else g, w))
        elif kind == "range":
            check("error" in g, "%s: out-of-range id %r decoded without error: %r" % (name, a, g))
        else:
            check(g == w, "%s info: %r != %r" % (name, g, w))
    print("%s: %s: %d passed, %d failed (%d texts, %d id lists x 2)" %
          (name, d, passed - p0, failed - f0, len(txts), len(idlists)))


def main():
    txts = texts()
    bads = bad_bytes()
    models = [("fixture marian source.spm", os.path.join(FIX, "marian-mt", "source.spm")),
              ("fixture marian target.spm", os.path.join(FIX, "marian-mt", "target.spm")),
              ("fixture xlm-r sentencepiece.bpe.model",
               os.path.join(FIX, "xlm-roberta-seq-cls", "sentencepiece.bpe.model")),
              ("fixture m2m100 sentencepiece.bpe.model (BPE)",
               os.path.join(FIX, "m2m100-mt", "sentencepiece.bpe.model"))]
    real = os.path.join(SHARED, "models", "translation", "opus-mt-tc-big-en-pt-tokenizer")
    if os.path.isdir(real):
        models += [("opus-mt en-pt source.spm", os.path.join(real, "source.spm")),
                   ("opus-mt en-pt target.spm", os.path.join(real, "target.spm"))]
    else:
        print("skip: %s is absent (real OPUS-MT vocabularies not checked)" % real)
    for name, p in models:
        spm_suite(name, p, txts, bads)
    with tempfile.TemporaryDirectory() as tmp:
        paths, bpe_paths, word = variants(tmp)
        for name, p in paths + bpe_paths:
            spm_suite(name, p, txts[:2500], bads)
        p = subprocess.run([TOOL, "spm", word], input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = p.stderr.decode()
        check(p.returncode != 0 and "WORD" in err and "not supported" in err,
              "a WORD model must be rejected clearly: exit %d, %r" % (p.returncode, err))
    golden = json.load(open(os.path.join(FIX, "marian-mt", "golden.json"), encoding="utf-8"))["examples"]
    marian_suite("marian fixture", os.path.join(FIX, "marian-mt"), txts, golden)
    if os.path.isdir(real):
        marian_suite("marian opus-mt en-pt", real, txts,
                     [{"text": "The database host is experiencing issues.",
                       "input_ids": [49850, 14362, 25579, 28398, 20565, 28512, 28, 44670]}])
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


main()
