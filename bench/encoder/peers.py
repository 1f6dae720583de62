#!/usr/bin/env python3
"""bench/encoder against the engines a user would pick instead, on the same CPU, the same BERT-base-shaped model
and the same token ids: nlpd fp32 / bf16 / int8, ONNX Runtime fp32 / dynamic int8 (npm onnxruntime-node) and
PyTorch fp32 / quantize_dynamic int8 (oneDNN engine) / bf16 autocast. For each (batch, threads) every engine runs
in its own process, engines interleaved round by round (the start rotates) so that all see the same background
load; each process does a warm-up then RUNS timed runs. Prints sequences/s medians over all timed runs, the load
average before and after, and each engine's max |logit difference| against nlpd fp32 (the fp32 reference: nlpd
fp32 matches PyTorch fp32 to ~1e-6, printed too).
Environment: BATCHES ("32 1"), THREADS_LIST ("1 2"), SEQ (128), ROUNDS (3), RUNS (3; RUNS_B1 = 15 for batch 1),
ENGINES (all), MODEL, OUT, NODE_PATH (onnxruntime-node's node_modules).
usage: peers.py NLPD_BENCH_BIN"""
import json
import os
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["nlpd-fp32", "nlpd-bf16", "nlpd-int8", "ort-fp32", "ort-int8", "torch-fp32", "torch-int8", "torch-bf16"]


def run(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr[-600:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def engine(name, b, s, runs, th, model, out, ids, bench_bin):
    kind, dt = name.split("-")
    logits = f"{out}/logits-{name}-b{b}.bin"
    env = dict(os.environ, OMP_NUM_THREADS=str(th), OPENBLAS_NUM_THREADS=str(th), BENCH_SGEMM="0")
    if kind == "nlpd":
        r = run([bench_bin, model, ids, logits, str(b), str(s), str(runs), str(th), "cpu", dt], env)
        return r["nlpd_times"], logits
    if kind == "ort":
        r = run(["node", f"{HERE}/ort_bench.js", f"{out}/onnx/{dt}.onnx", ids, str(b), str(s), str(runs), str(th),
                 logits], env)
        return r["times"], logits
    ref = f"{out}/logits-nlpd-fp32-b{b}.bin"
    r = run(["/usr/bin/python3", f"{HERE}/torch_bench.py", model, ids, ref, str(b), str(s), str(runs), str(th), "cpu",
             dt], env)
    return r["torch_times"], float(r["max_abs_diff"])  # torch_bench compares with nlpd fp32 itself


def main():
    bench_bin = sys.argv[1]
    model = os.environ["MODEL"]
    out = os.environ["OUT"]
    seq = int(os.environ.get("SEQ", "128"))
    rounds = int(os.environ.get("ROUNDS", "3"))
    engines = os.environ.get("ENGINES", " ".join(ALL)).split()
    batches = [int(x) for x in os.environ.get("BATCHES", "32 1").split()]
    threads = [int(x) for x in os.environ.get("THREADS_LIST", "1 2").split()]
    load0 = os.getloadavg()
    times, diffs, maxlogit = {}, {}, {}
    for b in batches:
        runs = int(os.environ.get("RUNS_B1" if b == 1 else "RUNS", "15" if b == 1 else "3"))
        ids = f"{out}/ids-b{b}.bin"
        # nlpd fp32 first: it writes the ids every engine reads and the reference logits
        first = engine("nlpd-fp32", b, seq, 1, 2, model, out, ids, bench_bin)
        ref = np.fromfile(first[1], dtype="<f4")
        maxlogit[b] = float(np.abs(ref).max())
        for th in threads:
            for r in range(rounds):
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for name in order:
                    print(f"== batch {b}, {th} thread(s), round {r + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                    try:
                        t, logits = engine(name, b, seq, runs, th, model, out, ids, bench_bin)
                    except (RuntimeError, OSError, ValueError) as e:
                        print(f"   {name} failed: {e}", file=sys.stderr)
                        continue
                    times.setdefault((name, b, th), []).extend(t)
                    if isinstance(logits, float):
                        d = logits
                    else:
                        d = float(np.abs(np.fromfile(logits, dtype="<f4") - ref).max())
                    diffs[(name, b)] = max(d, diffs.get((name, b), 0.0))
    load1 = os.getloadavg()
    cols = [(b, th) for b in batches for th in threads]
    print()
    print(f"BERT-base shapes (12 x 768, FFN 3072), seq {seq}, sequences/s, medians of every timed run "
          f"({rounds} rounds, engines interleaved); load average {load0[0]:.2f} before, {load1[0]:.2f} after "
          f"(the machine is shared: other jobs ran)")
    print("| engine | " + " | ".join(f"b{b}, {th} thr" for b, th in cols) + " | max abs dlogit vs nlpd fp32 |")
    print("|---|" + "---:|" * len(cols) + "---:|")
    med = {}
    for name in engines:
        row = []
        for b, th in cols:
            t = times.get((name, b, th))
            med[(name, b, th)] = b / statistics.median(t) if t else None
            row.append(f"{med[(name, b, th)]:.2f}" if t else "-")
        d = [diffs[(name, b)] for b in batches if (name, b) in diffs]
        dd = f"{max(d):.3g} ({100 * max(d) / max(maxlogit.values()):.1f}% of max abs logit)" if d else "-"
        print(f"| {name} | " + " | ".join(row) + f" | {dd} |")
    print()
    for a, bname in (("nlpd-int8", "ort-int8"), ("nlpd-fp32", "ort-fp32"), ("nlpd-bf16", "torch-bf16"),
                     ("nlpd-int8", "torch-int8")):
        ratios = [f"b{b}/{th}t {med[(a, b, th)] / med[(bname, b, th)]:.2f}x" for b, th in cols
                  if med.get((a, b, th)) and med.get((bname, b, th))]
        if ratios:
            print(f"{a} / {bname}: " + ", ".join(ratios))
    for b in batches:
        if (("nlpd-int8", b, 1)) in med and med[("nlpd-int8", b, 1)]:
            print(f"nlpd int8 latency, batch {b}, 1 thread: {1000 * b / med[('nlpd-int8', b, 1)]:.1f} ms per batch")
    print(f"max |logit| of the fp32 reference: " + ", ".join(f"b{b} {v:.3g}" for b, v in maxlogit.items()))
    json.dump({"times": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in times.items()},
               "diffs": {f"{k[0]}|{k[1]}": v for k, v in diffs.items()}, "load": [load0, load1]},
              open(f"{out}/peers.json", "w"))


if __name__ == "__main__":
    main()
