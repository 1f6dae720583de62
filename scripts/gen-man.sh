#!/bin/sh
# Writes OUTDIR/nlpd.1 and OUTDIR/nlpd.conf.5 from the binary itself: the commands from `nlpd help --roff` (the
# table behind `nlpd COMMAND --help`), the keys from `nlpd config-doc` (the config tables), so that neither page can
# drift from the program. usage: scripts/gen-man.sh NLPD OUTDIR   (run by `make`, installed by `make install`)
set -eu
NLPD=$1
OUT=$2
mkdir -p "$OUT"
VERSION=$("$NLPD" --version | sed 's/^nlpd //')
# roff escapes for text from the program: backslash, hyphen, a line starting with . or ', and non-ASCII
# characters as \[uXXXX] after dropping accents (groff reads Latin-1 and lacks composed glyphs on some devices)
esc() { sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" |
    perl -CS -MUnicode::Normalize -pe '$_ = NFD($_); s/\p{Mn}//g; s/([^\x00-\x7f])/sprintf("\\[u%04X]", ord($1))/ge'; }

{
    printf '.TH NLPD 1 "" "nlpd %s" "User Commands"\n' "$VERSION"
    printf '.SH NAME\nnlpd \\- stream\\-processing NLP daemon for Kafka\n'
    printf '.SH SYNOPSIS\n.B nlpd\n.I COMMAND\n[\\fIoptions\\fR]\n'
    printf '.SH DESCRIPTION\n'
    printf 'nlpd consumes records from Kafka topics, runs a pipeline of NLP stages on them (language identification,\n'
    printf 'translation, sentiment, named entities, moderation) and produces enriched records and dead letters.\n'
    printf 'One process, one configuration file, see\n.BR nlpd.conf (5).\n'
    printf '.SH COMMANDS\n'
    "$NLPD" help --roff
    printf '.SH ENVIRONMENT\n'
    printf 'String values of the configuration may refer to environment variables as ${VAR} or ${VAR:\\-default}; see\n'
    printf '.BR nlpd.conf (5).\n'
    printf '.SH EXIT STATUS\n0 on success, 1 on an error (an invalid configuration, a fatal Kafka error), 2 on a usage error.\n'
    printf '.SH FILES\n.TP\n.I /etc/nlpd/nlpd.conf\nthe configuration of the systemd service\n'
    printf '.SH SEE ALSO\n.BR nlpd.conf (5),\n.BR kcat (1),\n.BR systemd.service (5)\n'
} > "$OUT/nlpd.1.tmp"
mv "$OUT/nlpd.1.tmp" "$OUT/nlpd.1"

{
    printf '.TH NLPD.CONF 5 "" "nlpd %s" "File Formats"\n' "$VERSION"
    printf '.SH NAME\nnlpd.conf \\- configuration of nlpd\n'
    printf '.SH DESCRIPTION\n'
    printf 'A libconfig file with the sections kafka, input, output, flow, cache, metrics, batch, kernels and log,\n'
    printf 'and a pipeline list of stages. Unknown keys, wrong types and missing models are errors reported with\n'
    printf 'FILE:LINE by\n.BR "nlpd check" .\n'
    printf 'An annotated example is installed as nlpd.conf.example with the documentation.\n'
    printf '.SS Environment variables\n'
    printf 'In every string value, ${VAR} is replaced by the environment variable VAR and ${VAR:\\-default} by VAR,\n'
    printf 'or by default when VAR is unset or empty; an unset VAR without a default is an error at its FILE:LINE.\n'
    printf '$${ writes a literal ${. Secrets can also be read from files: cache.redis_password_file,\n'
    printf 'cache.redis_hmac_key_file, kafka.sasl_password_file.\n'
    printf '.SH KEYS\n'
    "$NLPD" config-doc | tail -n +3 | esc | awk '
        /^stage "/ { sub(/^stage /, ""); printf ".SS stage %s\n", $0; next }
        /^  [^ ]/ { sub(/^  /, ""); k = $1; $1 = ""; sub(/^ +/, ""); printf ".TP\n.B %s\n%s\n", k, $0; next }
        /^      / { sub(/^ +/, ""); print; next }
        /^$/ { next }
        { print }'
    printf '.SH SEE ALSO\n.BR nlpd (1)\n'
} > "$OUT/nlpd.conf.5.tmp"
mv "$OUT/nlpd.conf.5.tmp" "$OUT/nlpd.conf.5"
