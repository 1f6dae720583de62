#!/bin/sh
# Runs every test suite (what `make test` runs after building build/ and build/san/): the unit binaries, the
# same under ASan+UBSan, the fuzz corpus replays, the corpora, the model parity suites and the CLI
# integration suite on both binaries. Each suite's output goes to the terminal under a `== suite` header.
# A suite counts with its last `N passed, N failed` line; a suite that exits non-zero or prints no such line
# counts as one failure (a fuzz replay or a set-up step counts as one check). Ends with the total
# `N passed, N failed`; exit 1 if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 2

TMP=$(mktemp -d) || exit 2
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

pass=0
fail=0
failed_suites=
LIMIT=${TEST_TIMEOUT:-1800} # seconds per suite: a hang is a failure, not a stuck CI job
# Leaks inside third-party libraries that we cannot fix (see the file) are suppressed by name.
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

# run_cmd LOG CMD...: runs CMD without stdin, output to the terminal and LOG; returns CMD's status.
run_cmd() {
    log=$1
    shift
    if command -v timeout > /dev/null 2>&1; then
        set -- timeout "$LIMIT" "$@"
    fi
    { "$@" < /dev/null 2>&1; echo $? > "$TMP/rc"; } | tee "$log"
    read -r rc < "$TMP/rc" || rc=1
    return "$rc"
}

note_failure() {
    fail=$((fail + $2))
    failed_suites="$failed_suites
  $1"
}

# suite NAME CMD...: a suite that prints `N passed, N failed`.
suite() {
    name=$1
    shift
    echo "== $name"
    log=$TMP/log
    run_cmd "$log" "$@"
    rc=$?
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "== $name: exit $rc, no 'N passed, N failed' line: counted as 1 failure"
        note_failure "$name (exit $rc, no summary line)" 1
        return
    fi
    p=${line%% passed*}
    f=${line#*passed, }
    f=${f%% failed}
    pass=$((pass + p))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "== $name: exit $rc although it reports no failure: counted as 1 failure"
        note_failure "$name (exit $rc)" 1
    elif [ "$f" -gt 0 ]; then
        note_failure "$name ($f failed)" "$f"
    fi
}

# step NAME CMD...: a check without a summary line (fuzz replay, set-up): 1 passed or 1 failed.
step() {
    name=$1
    shift
    echo "== $name"
    run_cmd "$TMP/log" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        pass=$((pass + 1))
    else
        echo "== $name: exit $rc"
        note_failure "$name (exit $rc)" 1
    fi
}

is_test_binary() {
    case $1 in *.d | *.o | *.a | *.dSYM) return 1 ;; esac
    [ -f "$1" ] && [ -x "$1" ]
}

# --- unit tests: normal, then sanitised -------------------------------------------------------------------------
for dir in build/tests build/san/tests; do
    found=0
    for t in "$dir"/test_*; do
        is_test_binary "$t" || continue
        found=1
        suite "$t" "./$t"
    done
    # A unit source without its binary means the build is incomplete.
    for src in tests/unit/test_*.c; do
        [ -f "$src" ] || continue
        b=$dir/$(basename "$src" .c)
        if [ ! -x "$b" ]; then
            echo "== $b: not built (run make all and make SANITIZE=1 all): counted as 1 failure"
            note_failure "$b (not built)" 1
        fi
    done
    [ "$found" -eq 1 ] || echo "== $dir: no unit test binaries"
done

# --- the CUDA backend's own code under the host emulator (kernels/cuda/emul/: no GPU needed) --------------------
# The same op tests a GPU machine runs, against the CPU backend, with the CUDA sources built by g++.
if [ -f build/emul/libnlpd_cuda.so ] && [ -x build/emul/tests/test_cuda_emul ]; then
    suite build/emul/tests/test_cuda_emul ./build/emul/tests/test_cuda_emul
    suite "build/tests/test_cuda_ops (CUDA host emulator)" \
        env NLPD_CUDA_EMULATOR=1 NLPD_LIBDIR=build/emul NLPD_CUDA_ARENA_MB=64 ./build/tests/test_cuda_ops
    suite "build/tests/test_cuda_graph (CUDA host emulator)" \
        env NLPD_CUDA_EMULATOR=1 NLPD_LIBDIR=build/emul NLPD_CUDA_ARENA_MB=64 ./build/tests/test_cuda_graph
    # models on the emulated device (auto picks it), strict fp32 so the CPU's bounds hold: encoders against the
    # transformers goldens, Marian greedy/beam through the device's top-k, nlpd infer end to end
    for t in test_encoder test_translate; do
        suite "build/tests/$t (CUDA host emulator)" env NLPD_CUDA_EMULATOR=1 NLPD_LIBDIR=build/emul \
            NLPD_CUDA_ARENA_MB=64 NLPD_CUDA_MATH=strict "./build/tests/$t"
    done
    suite "tests/integration/test_cuda_deberta.sh (CUDA host emulator)" sh tests/integration/test_cuda_deberta.sh build/nlpd
else
    echo "== build/emul/libnlpd_cuda.so: not built (make all): counted as 1 failure"
    note_failure "build/emul/libnlpd_cuda.so (not built)" 1
fi

# --- fuzz corpus replays (sanitised build) ----------------------------------------------------------------------
for f in build/san/tests/fuzz_*; do
    is_test_binary "$f" || continue
    x=${f##*/fuzz_}
    if [ -d "tests/fuzz/corpus/$x" ]; then
        step "$f tests/fuzz/corpus/$x/" "./$f" "tests/fuzz/corpus/$x/"
    fi
done

# --- corpora ----------------------------------------------------------------------------------------------------
echo "== sh scripts/make-corpora.sh"
run_cmd "$TMP/log" sh scripts/make-corpora.sh
rc=$?
if [ "$rc" -eq 0 ]; then
    pass=$((pass + 1))
elif [ -f build/corpus/multilingual.txt ]; then
    # The reviews come from the npm registry; offline, the suites that need them say `skip:`.
    echo "== make-corpora: exit $rc, but the multilingual corpus is there (suites needing the reviews skip)"
else
    echo "== make-corpora: exit $rc"
    note_failure "make-corpora (exit $rc)" 1
fi

# --- model parity ---------------------------------------------------------------------------------------------------
# Without an argument test_fasttext_models.sh uses build/corpus/multilingual.txt plus its own tricky lines.
suite "tests/models/test_fasttext_models.sh" sh tests/models/test_fasttext_models.sh
suite "tests/models/test_pipe_parity.sh" bash tests/models/test_pipe_parity.sh build/nlpd
# Transformer encoders through the CLI against the transformers goldens.
suite "tests/models/test_infer.sh build/nlpd" bash tests/models/test_infer.sh build/nlpd
suite "tests/models/test_infer.sh build/san/nlpd" bash tests/models/test_infer.sh build/san/nlpd
# Sharded checkpoints and pytorch_model.bin (written by Debian's torch at test time) give the safetensors' output.
suite "tests/models/test_torch_bin.sh build/nlpd" sh tests/models/test_torch_bin.sh build/nlpd
suite "tests/models/test_torch_bin.sh build/san/nlpd" sh tests/models/test_torch_bin.sh build/san/nlpd
# The sentiment stage on Hugging Face folders against the goldens' softmax.
suite "tests/models/test_sentiment_hf.sh build/nlpd" bash tests/models/test_sentiment_hf.sh build/nlpd
suite "tests/models/test_sentiment_hf.sh build/san/nlpd" bash tests/models/test_sentiment_hf.sh build/san/nlpd
suite "tests/models/test_dtype_pipe.sh build/nlpd" bash tests/models/test_dtype_pipe.sh build/nlpd
suite "tests/models/test_dtype_pipe.sh build/san/nlpd" bash tests/models/test_dtype_pipe.sh build/san/nlpd
# The ner stage against the transformers token-classification pipeline, every aggregation strategy.
suite "tests/models/test_ner_pipe.sh build/nlpd" bash tests/models/test_ner_pipe.sh build/nlpd
suite "tests/models/test_ner_pipe.sh build/san/nlpd" bash tests/models/test_ner_pipe.sh build/san/nlpd
suite "tests/models/test_ner_pipe.sh build/nlpd (deberta-v2-token-cls)" \
    env NER_MODEL=tests/fixtures/hf-tiny/deberta-v2-token-cls bash tests/models/test_ner_pipe.sh build/nlpd
suite "tests/models/test_ner_pipe.sh build/san/nlpd (deberta-v2-token-cls)" \
    env NER_MODEL=tests/fixtures/hf-tiny/deberta-v2-token-cls bash tests/models/test_ner_pipe.sh build/san/nlpd
# Entity words on an XLM-R (SentencePiece) token-classification folder: the Rust decoder's, not the text span.
suite "tests/models/test_ner_words.sh build/nlpd" bash tests/models/test_ner_words.sh build/nlpd
suite "tests/models/test_ner_words.sh build/san/nlpd" bash tests/models/test_ner_words.sh build/san/nlpd
# The moderation stage: model layer (softmax/sigmoid of the logits), lexicon layer, both, config errors.
suite "tests/models/test_moderation_pipe.sh build/nlpd" bash tests/models/test_moderation_pipe.sh build/nlpd
suite "tests/models/test_moderation_pipe.sh build/san/nlpd" bash tests/models/test_moderation_pipe.sh build/san/nlpd
# Tokenizers against the Rust library (npm tokenizers@0.23.2; says `skip:` when npm is unreachable).
suite "tests/models/test_tokenizer_ref.sh" bash tests/models/test_tokenizer_ref.sh
# Decoders (nlpd tokenize --decode: ids and token lists) against the same library, every decoder type.
suite "tests/models/test_decode_ref.sh build/nlpd" bash tests/models/test_decode_ref.sh build/nlpd
suite "tests/models/test_decode_ref.sh build/san/nlpd" bash tests/models/test_decode_ref.sh build/san/nlpd
# Marian translation: transformers' goldens (greedy ids, encoder, logits, top-5), texts through the tokenizer, and
# greedy/beam search on random shapes against the independent PyTorch reference (tests/models/marian_ref.py).
suite "tests/models/test_marian.sh build/nlpd" sh tests/models/test_marian.sh build/nlpd
# M2M100 / NLLB through `nlpd infer`: greedy and beam ids exact, mixed target languages in one batch.
suite "tests/models/test_m2m100_infer.sh build/nlpd" sh tests/models/test_m2m100_infer.sh build/nlpd
# M2M100 on random shapes (activations, untied lm_head, unequal depths, no embedding scale) against tests/models/m2m_ref.py.
suite "tests/models/test_m2m100_beam.sh build/nlpd" sh tests/models/test_m2m100_beam.sh build/nlpd
# The translate stage: langid -> translate -> sentiment, sentence split and join, downstream text, cache, errors.
suite "tests/models/test_translate_pipe.sh build/nlpd" bash tests/models/test_translate_pipe.sh build/nlpd
# The translate stage with one multilingual model (NLLB / M2M100): lang.code mapping, lang_map, unsupported_lang.
suite "tests/models/test_translate_m2m_pipe.sh build/nlpd" bash tests/models/test_translate_m2m_pipe.sh build/nlpd
suite "tests/models/test_translate_pipe.sh build/san/nlpd" bash tests/models/test_translate_pipe.sh build/san/nlpd
# SentencePiece (Unigram) and the Marian tokenizer against python3-sentencepiece 0.1.97 (+ MarianTokenizer in Python).
suite "tests/models/test_spm_parity.sh" sh tests/models/test_spm_parity.sh
# DeBERTa-v3 folders with spm.model and no tokenizer.json: golden ids, = tokenizer.json on the 4321 cases.
suite "tests/models/test_deberta_spm.sh build" bash tests/models/test_deberta_spm.sh build
suite "tests/models/test_deberta_spm.sh build/san" bash tests/models/test_deberta_spm.sh build/san

# --- CLI integration --------------------------------------------------------------------------------------------
suite "tests/integration/test_pipe.sh build/nlpd" bash tests/integration/test_pipe.sh build/nlpd
suite "tests/integration/test_pipe.sh build/san/nlpd" bash tests/integration/test_pipe.sh build/san/nlpd
# systemd: the unit verifies, and the notify protocol is spoken in order (fake NOTIFY_SOCKET).
suite "tests/integration/test_systemd.sh build/nlpd" bash tests/integration/test_systemd.sh build/nlpd
# `make install` into a scratch root, then the README's install steps and `nlpd check` as the service user.
suite "tests/integration/test_install.sh" bash tests/integration/test_install.sh
# scripts/gpu-check.sh against stub binaries: every broken step ends in FAIL (no GPU needed).
suite "tests/integration/test_gpu_check.sh" bash tests/integration/test_gpu_check.sh
# The CLI: --version, every command's --help, error messages, did-you-mean, tokenize on Marian, man pages, completion.
suite "tests/integration/test_cli.sh build/nlpd" bash tests/integration/test_cli.sh build/nlpd
suite "tests/integration/test_cli.sh build/san/nlpd" bash tests/integration/test_cli.sh build/san/nlpd
# Config: ${VAR} substitution, *_file secrets (with a real redis-server), check's cross-key errors, the examples run.
suite "tests/integration/test_check.sh build/nlpd" bash tests/integration/test_check.sh build/nlpd
# Logs: ISO 8601 timestamps (none under journald), levels, dead letters at info and rate-limited, librdkafka once.
suite "tests/integration/test_logs.sh build/nlpd" bash tests/integration/test_logs.sh build/nlpd
suite "tests/integration/test_logs.sh build/san/nlpd" bash tests/integration/test_logs.sh build/san/nlpd
# conf/nlpd.conf documents every key config-doc prints.
suite "tests/integration/test_config_doc.sh" bash tests/integration/test_config_doc.sh build/nlpd
# Metrics and health endpoints of the daemon while records flow.
suite "tests/integration/test_metrics.sh build/nlpd" bash tests/integration/test_metrics.sh build/nlpd
suite "tests/integration/test_metrics.sh build/san/nlpd" bash tests/integration/test_metrics.sh build/san/nlpd
# make demo's script: records, then dead letters, then a summary of its three stages, within a minute.
suite "tests/integration/test_demo.sh" bash tests/integration/test_demo.sh
# conf/monitoring: promtool on the alert rules, every metric they and the dashboard name in a live scrape.
suite "tests/integration/test_monitoring.sh build/nlpd" bash tests/integration/test_monitoring.sh build/nlpd
suite "tests/integration/test_monitoring.sh build/san/nlpd" bash tests/integration/test_monitoring.sh build/san/nlpd
# `make deb`, installed with dpkg --root into a scratch root, `nlpd check` as the service user, the unit verified, purged.
suite "tests/integration/test_deb.sh" bash tests/integration/test_deb.sh
# Model management: shadow agreement, canary split, drift metrics in a live scrape, nlpd models, config errors.
suite "tests/integration/test_models.sh build/nlpd" bash tests/integration/test_models.sh build/nlpd
suite "tests/integration/test_models.sh build/san/nlpd" bash tests/integration/test_models.sh build/san/nlpd
# SIGHUP reload while records flow: broken files change nothing, a new pipeline applies with every record exactly
# once, a restart-only key is refused, notify order.
suite "tests/integration/test_reload.sh build/nlpd" bash tests/integration/test_reload.sh build/nlpd
suite "tests/integration/test_reload.sh build/san/nlpd" bash tests/integration/test_reload.sh build/san/nlpd
# The result cache with a real redis-server (second pass, changed options, corruption, outage, daemon, bounds).
suite "tests/integration/test_cache.sh build/nlpd" bash tests/integration/test_cache.sh build/nlpd
suite "tests/integration/test_cache.sh build/san/nlpd" bash tests/integration/test_cache.sh build/san/nlpd
suite "tests/integration/test_kafka.sh build/nlpd" bash tests/integration/test_kafka.sh build/nlpd
# nlpd replay: dead letters of nlpd run back byte-identical, filters, --dry-run, --group, exit codes.
suite "tests/integration/test_replay.sh build/nlpd" bash tests/integration/test_replay.sh build/nlpd
suite "tests/integration/test_replay.sh build/san/nlpd" bash tests/integration/test_replay.sh build/san/nlpd
# Schema Registry: evolved writer schemas resolved, output registered and framed, registry down at and after start.
suite "tests/integration/test_registry.sh build/nlpd" bash tests/integration/test_registry.sh build/nlpd
suite "tests/integration/test_registry.sh build/san/nlpd" bash tests/integration/test_registry.sh build/san/nlpd
# The README's kcat lines against the embedded broker, as written (the address line alone on its line).
suite "tests/integration/test_embedded_kcat.sh build/nlpd" bash tests/integration/test_embedded_kcat.sh build/nlpd
suite "tests/integration/test_embedded_kcat.sh build/san/nlpd" bash tests/integration/test_embedded_kcat.sh build/san/nlpd

echo
if [ -n "$failed_suites" ]; then
    echo "failures in:$failed_suites"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
