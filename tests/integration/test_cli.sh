#!/bin/bash
# The command line an operator meets (issue 17): --version, `COMMAND --help` for every command (exit 0, usage on
# stdout), error messages of missing models and folders, "did you mean" for unknown keys, `tokenize` on a Marian
# folder against transformers' golden ids, the generated man pages and the bash completion.
# usage: tests/integration/test_cli.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=${1:-build/nlpd}
. tests/lib.sh
NOK_MAX=1500
T=$(mktemp -d) || exit 2
trap 'rm -rf "$T"' EXIT

v1=$("$NLPD" --version) && v2=$("$NLPD" version) && [ "$v1" = "$v2" ] && [[ $v1 =~ ^nlpd\ [0-9]+\.[0-9]+\.[0-9]+ ]] \
    && ok "--version and version print '$v1'" || nok "version" "'$v1' / '${v2:-}'"

for c in run check pipe demo config-doc infer tokenize version help; do
    out=$(timeout 10 "$NLPD" "$c" --help 2> "$T/err" < /dev/null)
    rc=$?
    if [ "$rc" -eq 0 ] && [[ $out == "usage: nlpd $c"* ]] && [ ! -s "$T/err" ]; then
        ok "nlpd $c --help: exit 0, usage on stdout"
    else
        nok "nlpd $c --help" "exit $rc, stdout '$out', stderr '$(cat "$T/err")'"
    fi
done
out=$(timeout 10 "$NLPD" check -c /nonexistent --help) && [[ $out == "usage: nlpd check"* ]] \
    && ok "--help after other options still shows the usage" || nok "check -c X --help" "$out"
"$NLPD" help infer | grep -q -- "--num-beams" && ok "nlpd help infer shows infer's options" || nok "help infer" "no --num-beams"
"$NLPD" frobnicate > /dev/null 2>&1
[ $? -eq 2 ] && ok "an unknown command exits 2" || nok "unknown command" "exit not 2"
out=$("$NLPD" chekc -c x 2>&1)
[ $? -eq 2 ] && [[ $out == "nlpd: unknown command 'chekc' (did you mean 'check'?)"* ]] \
    && ok "an unknown command close to a known one gets a suggestion" || nok "command did-you-mean" "$out"

# Missing models: a Hugging Face folder is not something `make models` fetches; lid.176.ftz is.
cat > "$T/hf.conf" << 'C'
pipeline = ( { stage = "sentiment"; model = "models/distilbert-sst2-missing"; } );
C
out=$("$NLPD" check -c "$T/hf.conf" 2>&1)
if [ $? -eq 1 ] && [[ $out == *"hf.conf:1: "*"not found"* ]] && [[ $out != *"run \`make models\`"* ]] \
    && [[ $out == *"Hugging Face folder"* ]]; then
    ok "a missing Hugging Face folder does not say 'run make models'"
else
    nok "missing HF folder message" "$out"
fi
cat > "$T/lid.conf" << 'C'
pipeline = ( { stage = "langid"; model = "nowhere/lid.176.ftz"; } );
C
out=$("$NLPD" check -c "$T/lid.conf" 2>&1)
[[ $out == *"run \`make models\` to fetch it"* ]] && ok "a missing lid.176.ftz says make models fetches it" \
    || nok "missing lid.176.ftz" "$out"

out=$("$NLPD" infer --model "$T/no-such-folder" < /dev/null 2>&1)
rc=$?
[ "$rc" -ne 0 ] && [[ $out == *"model folder '$T/no-such-folder': No such file or directory"* ]] \
    && ok "infer --model MISSING names the folder" || nok "infer --model MISSING" "exit $rc: $out"
out=$("$NLPD" infer --model --max-length 5 < /dev/null 2>&1)
[ $? -eq 2 ] && [[ $out == *"--model needs a model folder"* ]] && [[ $out != *'"5"'* ]] \
    && ok "infer --model followed by an option says --model needs a folder" || nok "infer --model --max-length" "$out"

# "did you mean": in a stage, in a daemon section, at top level; nothing for a key far from every known one.
cat > "$T/typo.conf" << 'C'
kafak: { };
batch: { max_record = 8; };
pipeline = ( { stage = "langid"; model = "models/lid.176.ftz"; treshold = 0.5; zzzzzz = 1; } );
C
out=$("$NLPD" check -c "$T/typo.conf" 2>&1)
for want in "typo.conf:1: unknown key 'kafak' at top level (did you mean 'kafka'?)" \
    "typo.conf:2: unknown key 'max_record' in batch (did you mean 'max_records'?)" \
    "typo.conf:3: unknown key 'treshold' in pipeline[0] (langid) (did you mean 'threshold'?)"; do
    [[ $out == *"$want"* ]] && ok "did you mean: $want" || nok "did you mean: $want" "$out"
done
[[ $out == *"unknown key 'zzzzzz'"* ]] && [[ $out != *"'zzzzzz'"*"did you mean"* ]] \
    && ok "no suggestion for a key far from every known one" || nok "zzzzzz" "$out"

# tokenize on a Marian folder: transformers' MarianTokenizer ids (the fixture's goldens).
M=tests/fixtures/hf-tiny/marian-mt
if why=$(python3 - "$NLPD" "$M" << 'PY' 2>&1
import json, subprocess, sys
nlpd, m = sys.argv[1:3]
ex = json.load(open(m + "/golden.json"))["examples"]
inp = "".join(json.dumps({"text": e["text"]}) + "\n" for e in ex)
out = subprocess.run([nlpd, "tokenize", "--model", m], input=inp, capture_output=True, text=True, timeout=60)
assert out.returncode == 0, out.stderr
got = [json.loads(l)["ids"] for l in out.stdout.splitlines()]
assert got == [e["input_ids"] for e in ex], (got, [e["input_ids"] for e in ex])
dec = subprocess.run([nlpd, "tokenize", "--decode", "--model", m], input=json.dumps({"ids": got[0], "skip_special_tokens": True}) + "\n",
                     capture_output=True, text=True, timeout=60)
assert dec.returncode == 0 and "text" in json.loads(dec.stdout), dec.stdout + dec.stderr
print(len(got), "texts")
PY
); then ok "tokenize on a Marian folder gives transformers' ids ($why)"; else nok "tokenize Marian" "$why"; fi

# Man pages generated from the binary: every command and every config-doc key is in them, and they format cleanly.
MAN=$(dirname "$NLPD")/man
if [ -f "$MAN/nlpd.1" ] && [ -f "$MAN/nlpd.conf.5" ]; then
    miss=
    for c in run check pipe demo config-doc infer tokenize; do grep -q "^\.B nlpd $c" "$MAN/nlpd.1" || miss="$miss $c"; done
    for k in $("$NLPD" config-doc | sed -n 's/^  \([a-z_]*\.[a-z_0-9]*\)  (.*/\1/p'); do
        grep -qx "\.B $k" "$MAN/nlpd.conf.5" || miss="$miss $k"
    done
    [ -z "$miss" ] && ok "nlpd.1 has every command, nlpd.conf.5 every config-doc key" || nok "man pages" "missing:$miss"
    if command -v groff > /dev/null; then
        w=$(groff -man -ww -z "$MAN/nlpd.1" "$MAN/nlpd.conf.5" 2>&1)
        [ -z "$w" ] && ok "groff formats both pages without a warning" || nok "groff warnings" "$w"
    fi
else
    nok "man pages" "$MAN/nlpd.1 or $MAN/nlpd.conf.5 not built (make)"
fi

# bash completion: commands, then a command's options.
if out=$(bash -c 'source completion/nlpd.bash
    COMP_WORDS=(nlpd to); COMP_CWORD=1; _nlpd; echo "${COMPREPLY[*]}"
    COMP_WORDS=(nlpd infer --ba); COMP_CWORD=2; _nlpd; echo "${COMPREPLY[*]}"
    COMP_WORDS=(nlpd infer --backend c); COMP_CWORD=3; _nlpd; echo "${COMPREPLY[*]}"' 2>&1) \
    && [ "$out" = "tokenize
--backend
cpu cuda" ]; then
    ok "bash completion completes commands, options and option values"
else
    nok "bash completion" "$out"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
