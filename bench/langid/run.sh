#!/bin/sh
# Language-ID throughput: nlpd's langid stage (`nlpd pipe`, 1 and 2 kernel threads) against the fastText tool
# (`fasttext predict-prob`) on the same 100,000 lines and the same model. See bench/langid/README.md.
#   BENCH_RUNS=N     timed runs of each command (default 5), alternated; the table shows medians
#   BENCH_WARMUP=0   skip the untimed first pass that checks nlpd's output against fastText's
#   NLPD=PATH        the binary to measure (default build/nlpd)
set -eu

cd "$(dirname "$0")/../.."

MODEL=models/lid.176.ftz
TXT=build/corpus/bench100k.txt
JSONL=build/corpus/bench100k.jsonl
NLPD=${NLPD:-build/nlpd}

[ -f "$MODEL" ] || sh scripts/fetch-models.sh
if [ ! -f "$TXT" ] || [ ! -f "$JSONL" ]; then
	sh scripts/make-corpora.sh || true # the reviews may fail without npm; only the bench files matter here
fi
for f in "$MODEL" "$TXT" "$JSONL"; do
	[ -f "$f" ] || { echo "bench/langid: missing $f" >&2; exit 1; }
done
[ -x "$NLPD" ] || { echo "bench/langid: $NLPD not built (run 'make bench')" >&2; exit 1; }
command -v fasttext >/dev/null 2>&1 || { echo "bench/langid: no fasttext tool (scripts/setup-deps.sh)" >&2; exit 1; }

exec python3 - "$MODEL" "$TXT" "$JSONL" "$NLPD" <<'PY'
import json, os, platform, statistics, subprocess, sys, tempfile, time

model, txt, jsonl, nlpd = sys.argv[1:5]
runs = int(os.environ.get("BENCH_RUNS", "5"))
warmup = os.environ.get("BENCH_WARMUP", "1") != "0"
if runs < 1:
    sys.exit("bench/langid: BENCH_RUNS must be >= 1")
with open(txt, "rb") as f:
    lines = sum(1 for _ in f)

# name, argv, stdin file; the first one is the baseline.
cmds = [
    ("fasttext predict-prob (1 thread)", ["fasttext", "predict-prob", model, "-", "1"], txt),
    ("nlpd pipe, langid, 1 thread", [nlpd, "pipe", "-c", "bench/langid/langid-1t.conf"], jsonl),
    ("nlpd pipe, langid, 2 threads", [nlpd, "pipe", "-c", "bench/langid/langid-2t.conf"], jsonl),
]

def run(argv, stdin_path, stdout):
    """Runs argv with stdin from a file; returns wall seconds. Exits the bench when the command fails."""
    with open(stdin_path, "rb") as fin, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdin=fin, stdout=stdout, stderr=err)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-2000:]
            sys.exit("bench/langid: `%s < %s` failed (exit %d):\n%s" % (" ".join(argv), stdin_path, p.returncode, tail))
    return dt

def check_outputs():
    """Untimed first pass: every command answers every line, and nlpd's labels agree with fastText's."""
    outs = []
    for _, argv, src in cmds:
        with tempfile.TemporaryFile() as out:
            run(argv, src, out)
            out.seek(0)
            outs.append(out.read().decode("utf-8", "replace").splitlines())
    ref = []
    for line in outs[0]:
        label, score = line.split()[:2]
        ref.append((label.replace("__label__", ""), float(score)))
    for (name, _, _), out in zip(cmds, outs):
        if len(out) != lines:
            sys.exit("bench/langid: %s: %d output lines for %d input lines" % (name, len(out), lines))
    notes = []
    for (name, _, _), out in zip(cmds[1:], outs[1:]):
        same, dmax = 0, 0.0
        for n, (line, (rl, rs)) in enumerate(zip(out, ref), 1):
            try:
                lang = json.loads(line)["lang"]
                code, score = lang["code"], float(lang["score"])
            except (ValueError, KeyError, TypeError):
                sys.exit("bench/langid: %s: output line %d has no lang.code/lang.score: %s" % (name, n, line[:200]))
            if code == rl:
                same += 1
                dmax = max(dmax, abs(score - rs))
        notes.append("%s: same label as fastText on %.2f%% of lines, max |score diff| %.2g where same"
                     % (name, 100.0 * same / lines, dmax))
    return notes

notes = check_outputs() if warmup else []

times = [[] for _ in cmds]
with open(os.devnull, "wb") as null:
    for r in range(runs):
        for i, (_, argv, src) in enumerate(cmds):    # alternated, so drift hits every command alike
            times[i].append(run(argv, src, null))

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

def version(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"

print("langid throughput: %d lines (%s), model %s, median of %d runs each" % (lines, txt, model, runs))
print("machine: nproc %d (of %s online), %s; %s" % (len(os.sched_getaffinity(0)), os.cpu_count(), cpu_model(),
                                                  platform.platform()))
print("fasttext %s; %s" % (version(["dpkg-query", "-W", "-f=${Version}", "fasttext"]), version([nlpd, "version"])))
print()
base = statistics.median(times[0])
w = max(len(c[0]) for c in cmds)
print("%-*s  %10s  %12s  %12s  %s" % (w, "command", "median s", "lines/s", "vs fastText", "all runs (s)"))
for (name, _, _), ts in zip(cmds, times):
    med = statistics.median(ts)
    print("%-*s  %10.3f  %12.0f  %11.2fx  %s" % (w, name, med, lines / med, base / med,
                                                 " ".join("%.3f" % t for t in ts)))
for n in notes:
    print(n)
PY
