#!/bin/sh
# Installs the Debian packages that nlpd's build, tests, models and benchmarks need, when some are missing.
# Idempotent; prints nothing when everything is present. Uses sudo only when not root.
set -eu

cd "$(dirname "$0")/.."

# Build toolchain: cc, make, libc headers; pkg-config gives the libraries' flags to the Makefile.
PKGS="build-essential pkg-config"
# clang-format: `make check` checks the formatting against the committed .clang-format.
PKGS="$PKGS clang-format"
# perl (full, not perl-base): scripts/gen-man.sh escapes the man pages' text with Unicode::Normalize.
PKGS="$PKGS perl"
# man-db (and groff-base with it): tests read the generated man pages as `man` does.
PKGS="$PKGS man-db"
# Daemon libraries: config file, JSON, Unicode case mapping, SHA-256 of models (libcrypto), Kafka, Avro, Redis client, event loop, sd_notify.
PKGS="$PKGS libconfig-dev libjansson-dev libutf8proc-dev libssl-dev librdkafka-dev libavro-dev libhiredis-dev libevent-dev libsystemd-dev"
# libcurl (OpenSSL flavour, the TLS library nlpd already links): the HTTP client of the Schema Registry support
# (input/output.schema_registry), so that HTTPS, proxies and authentication are a well-kept library's job.
PKGS="$PKGS libcurl4-openssl-dev"
# Kernels: OpenBLAS sgemm for the CPU backend; oneDNN (libdnnl-dev) for its bf16 and int8 products, attention and
# large fp32 products (AVX-512 / VNNI / AVX512-BF16 picked at run time, whatever OPENBLAS_CORETYPE says).
PKGS="$PKGS libopenblas-dev libdnnl-dev"
# References and test services: the fastText tool (parity, bench baseline), a real Redis for integration tests.
PKGS="$PKGS fasttext redis-server"
# Kafka test peers: kcat (a real client, as a user would try nlpd) and python3-avro (an independent Avro decoder).
PKGS="$PKGS kcat python3-avro"
# python3-sentencepiece: the reference for the SentencePiece / Marian tokenizer parity tests
# (tests/models/test_spm_parity.sh runs it with /usr/bin/python3).
PKGS="$PKGS python3-sentencepiece"
# python3-torch + python3-numpy: the independent PyTorch reference that beam search is checked against
# (tests/models/marian_ref.py) and the baselines of bench/encoder and bench/translate.
PKGS="$PKGS python3-torch python3-numpy"
# python3-onnx: bench/encoder builds the ONNX Runtime peer's dynamic-int8 graph with it.
PKGS="$PKGS python3-onnx"
# Scripts and test corpora: python3 (corpus and bench scripts), gettext + libglib2.0-data (translation catalogues
# the multilingual corpus is extracted from).
PKGS="$PKGS python3 gettext libglib2.0-data"
# prometheus: its promtool checks conf/monitoring/alerts.yml (tests/integration/test_monitoring.sh).
PKGS="$PKGS prometheus"
# Fetching models: TLS roots and curl for downloads.
PKGS="$PKGS ca-certificates curl"
# npm (model fallback, review corpus, tokenizer reference): Debian's only when no npm is on PATH already.
if ! command -v npm >/dev/null 2>&1; then
	PKGS="$PKGS npm"
fi

missing=""
for p in $PKGS; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" ok installed") ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

echo "setup-deps: installing missing Debian packages:$missing"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo"
	else
		echo "setup-deps: not root and no sudo; install as root:$missing" >&2
		exit 1
	fi
fi

mkdir -p build
log=build/setup-deps.log
: >"$log"
# $missing is deliberately unquoted: one word per package.
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -q &&
	$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $missing; } >>"$log" 2>&1; then
	cat "$log" >&2
	echo "setup-deps: installing$missing failed (log: $log)" >&2
	exit 1
fi
