#!/bin/sh
# Fetches the fastText models nlpd's stages, tests and benchmarks use into models/ (git-ignored), each checked
# against a pinned sha256. Sources, in order: the file already in models/, a local mirror ($NLPD_MODEL_MIRROR,
# then ../shared/models), the official download, and for lid.176 an npm package that ships the same bytes.
# Quiet when everything is present; exit 1 when a required model cannot be had.
set -eu

cd "$(dirname "$0")/.."

MODELS=models
OFFICIAL=https://dl.fbaipublicfiles.com/fasttext/supervised-models

tmp=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
	rm -f "$MODELS"/.fetch.*.$$
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "fetch-models: $*"; }
err() { echo "fetch-models: $*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE SHA: 0 when FILE exists and has the expected hash. On a mismatch, says so (file, expected, actual).
check() {
	[ -f "$1" ] || return 1
	actual=$(sha_of "$1")
	[ "$actual" = "$2" ] && return 0
	err "$3: sha256 mismatch: expected $2, got $actual"
	return 1
}

# install_candidate FILE NAME SHA SOURCE: verify FILE, then rename it into models/NAME atomically.
install_candidate() {
	if check "$1" "$3" "$2 from $4"; then
		chmod 0644 "$1"
		mv -f "$1" "$MODELS/$2"
		say "$MODELS/$2 <- $4"
		return 0
	fi
	rm -f "$1"
	return 1
}

# from_mirror NAME SHA SUBDIR: try $NLPD_MODEL_MIRROR/SUBDIR/NAME, then ../shared/models/SUBDIR/NAME.
from_mirror() {
	for root in ${NLPD_MODEL_MIRROR:+"$NLPD_MODEL_MIRROR"} ../shared/models; do
		src="$root/$3/$1"
		tried="$tried\n  mirror   $src"
		[ -f "$src" ] || continue
		part="$MODELS/.fetch.$1.$$"
		cp "$src" "$part" && install_candidate "$part" "$1" "$2" "$src" && return 0
	done
	return 1
}

# from_url NAME SHA URL
from_url() {
	tried="$tried\n  download $3"
	command -v curl >/dev/null 2>&1 || return 1
	part="$MODELS/.fetch.$1.$$"
	if ! curl -fsSL --connect-timeout 10 --max-time 120 -o "$part" "$3" 2>"$tmp/curl.err"; then
		err "$1: download failed: $(tail -n 1 "$tmp/curl.err")"
		rm -f "$part"
		return 1
	fi
	install_candidate "$part" "$1" "$2" "$3"
}

# from_npm NAME SHA PACKAGE@VERSION PATH-IN-TARBALL
from_npm() {
	tried="$tried\n  npm      $3 ($4)"
	command -v npm >/dev/null 2>&1 || return 1
	d="$tmp/npm.$1"
	mkdir -p "$d"
	if ! (cd "$d" && npm_config_update_notifier=false timeout 300 \
		npm pack --loglevel=error --fetch-retries=1 "$3") >"$tmp/npm.log" 2>&1; then
		err "$1: npm pack $3 failed: $(grep "npm error" "$tmp/npm.log" | head -n 2 | tr "\n" " ")"
		return 1
	fi
	tgz=$(find "$d" -maxdepth 1 -name '*.tgz' | head -n 1)
	if [ -z "$tgz" ] || ! tar -xzf "$tgz" -C "$d" "$4" 2>"$tmp/tar.err"; then
		err "$1: $4 not found in the $3 tarball"
		return 1
	fi
	part="$MODELS/.fetch.$1.$$"
	cp "$d/$4" "$part" && install_candidate "$part" "$1" "$2" "npm $3"
}

# fetch NAME SHA BYTES SUBDIR REQUIRED(1|0) [NPM_SPEC NPM_PATH]
fetch() {
	name=$1 sha=$2 bytes=$3 subdir=$4 required=$5
	dest="$MODELS/$name"
	if [ -f "$dest" ]; then
		check "$dest" "$sha" "$dest" && return 0
		err "$dest: replacing the corrupt file"
	fi
	[ -n "$tmp" ] || tmp=$(mktemp -d)
	tried=""
	from_mirror "$name" "$sha" "$subdir" && return 0
	from_url "$name" "$sha" "$OFFICIAL/$name" && return 0
	if [ $# -ge 7 ]; then
		from_npm "$name" "$sha" "$6" "$7" && return 0
	fi
	if [ -f "$dest" ]; then
		mv -f "$dest" "$dest.corrupt"
		err "$dest: moved the corrupt file to $dest.corrupt"
	fi
	if [ "$required" = 1 ]; then
		err "error: could not get $name. Tried:$(printf '%b' "$tried")"
		err "Place it by hand at $dest ($bytes bytes, sha256 $sha), or point NLPD_MODEL_MIRROR at a" \
			"folder holding $subdir/$name, and run 'make models' again."
		return 1
	fi
	err "warning: optional model $name not fetched; what uses it is skipped. Tried:$(printf '%b' "$tried")"
	return 0
}

mkdir -p "$MODELS"
rc=0

# Language identification, 176 languages (Facebook fastText; model licence CC BY-SA 3.0).
fetch lid.176.ftz 8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83 938013 \
	langid/fasttext-lid176 1 \
	fasttext.wasm.js@1.0.0 package/dist/models/language-identification/assets/lid.176.ftz || rc=1

# Sentiment, positive/negative (fastText Amazon Review Polarity, quantised).
fetch amazon_review_polarity.ftz b7eca035558a38aa4d0ebb863ac86442437bc2861b14db13e6b08ddfd6ca94f0 1573446 \
	sentiment/fasttext-amazon-review-polarity 1 || rc=1

# Optional: sentiment, 1-5 stars (fastText Amazon Review Full, quantised).
fetch amazon_review_full.ftz 814f71e0eaacfdff736949f6c1175ed835feb0f85976d70dcc9319cdccfca50f 1591105 \
	sentiment/fasttext-amazon-review-full 0 || rc=1

# Moderation word lists (LDNOOBW, CC BY 4.0; cuss, MIT) into models/lexicons/.
sh scripts/fetch-lexicons.sh || rc=1

exit $rc
