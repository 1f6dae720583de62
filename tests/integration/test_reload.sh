#!/bin/bash
# SIGHUP reload of `nlpd run` (embedded broker) while records flow without a pause:
#   (a) a broken file (syntax error, unknown stage, missing model) changes nothing: nlpd keeps running, logs
#       FILE:LINE, counts result="invalid";
#   (b) a valid file with a changed pipeline (a Hugging Face sentiment stage added, a langid option changed) is
#       applied: records processed after the swap carry the new stage's output, model_info and the padded-token
#       histogram show the new model, result="applied";
#   (c) a file that also changes a restart-only key (kafka.group_id) is refused whole: the pipeline change in it
#       is not applied either, result="restart_required";
# and every record is delivered exactly once (counted by id on the output topic), the notify socket sees
# RELOADING=1 (with MONOTONIC_USEC) then READY=1 for every reload, and SIGTERM exits 0.
# usage: tests/integration/test_reload.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=$(realpath "${1:-build/nlpd}")
TOOL=$(dirname "$NLPD")/tests/tool_kafka
HF=$PWD/tests/fixtures/hf-tiny/distilbert-seq-cls
T=${KEEP_TMP:-$(mktemp -d)}
[ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$T"' EXIT
if [ ! -f models/lid.176.ftz ] || [ ! -x "$TOOL" ] || [ ! -d "$HF" ]; then
    echo "skip: needs models/lid.176.ftz, $TOOL and $HF"
    echo "0 passed, 0 failed"
    exit 0
fi
timeout 150 python3 - "$NLPD" "$TOOL" "$T" "$PWD/models/lid.176.ftz" "$HF" << 'PY'
import json, os, re, signal, socket, subprocess, sys, threading, time, urllib.request

nlpd, tool, tmp, lid, hf = sys.argv[1:6]
passed = failed = 0


def ok(name):
    global passed
    passed += 1
    print("ok -", name, flush=True)


def nok(name, why):
    global failed
    failed += 1
    print("not ok -", name + ":", why, flush=True)


s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
conf = os.path.join(tmp, "nlpd.conf")
HEAD = """kafka: { brokers = "embedded"; group_id = "%s"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq";
         embedded_partitions = 4; };
metrics: { listen = "127.0.0.1:%d"; };
flow: { shutdown_timeout_ms = 10000; };
batch: { max_records = 32; max_wait_ms = 5; };
kernels: { threads = 2; };
log: { level = "info"; };
"""
LANGID = '{ stage = "langid"; model = "%s"; }' % lid


def write(text):
    tmpf = conf + ".new"
    with open(tmpf, "w") as f:
        f.write(text)
    os.rename(tmpf, conf)


write(HEAD % ("nlpd-reload", port) + "pipeline = ( %s );\n" % LANGID)

sock_path = os.path.join(tmp, "notify.sock")
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(sock_path)
ns.settimeout(0.1)
notes = []
stop_notes = threading.Event()


def notes_reader():  # read all along, as systemd does: a full socket queue would block nlpd's sd_notify
    while not stop_notes.is_set():
        try:
            notes.append(ns.recv(4096).decode())
        except socket.timeout:
            pass


threading.Thread(target=notes_reader, daemon=True).start()


logf = open(os.path.join(tmp, "nlpd.log"), "w")
env = dict(os.environ, NOTIFY_SOCKET=sock_path)
env.pop("WATCHDOG_USEC", None)
p = subprocess.Popen([nlpd, "run", "-c", conf], env=env, stdout=logf, stderr=logf)


def log():
    return open(os.path.join(tmp, "nlpd.log")).read()


def metrics():
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    except Exception:
        return ""


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape("{%s}" % labels if labels else "")), text, re.M)
    return float(m.group(1)) if m else None


def reloads(result):
    return metric(metrics(), "nlpd_config_reloads_total", 'result="%s"' % result) or 0


def wait(cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


bs = None
if wait(lambda: re.search(r"embedded broker at (\S+):", log()) and "assigned" in log(), 60):
    bs = re.search(r"embedded broker at ([0-9.]+:[0-9]+)", log()).group(1)
if not bs:
    nok("daemon starts", log()[-500:])
    p.kill()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1)

# A steady stream of N records (ids 0..N-1) at about 400 records/s for the whole test, with one burst of
# BURST records on request, so that a reload meets a backlog of batches in the old pipeline.
N, BURST = 7000, 2000
burst = threading.Event()
prod = subprocess.Popen([tool, "produce", bs, "in"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, text=True)
sent = [0]


def feed():
    left = BURST
    for i in range(N):
        prod.stdin.write(json.dumps({"id": str(i), "text": "record %d: the delivery was fast and friendly" % i}) + "\n")
        if burst.is_set() and left > 0:
            left -= 1
            continue
        if i % 20 == 19:
            prod.stdin.flush()
            sent[0] = i + 1
            time.sleep(0.05)
    prod.stdin.close()
    sent[0] = N


feeder = threading.Thread(target=feed)
feeder.start()
wait(lambda: sent[0] >= 300, 30)


def sighup_and_wait(result, before, timeout=30):
    p.send_signal(signal.SIGHUP)
    return wait(lambda: reloads(result) >= before + 1, timeout)


# (a) broken files: nothing changes, the daemon keeps consuming.
broken = [
    ("syntax error", HEAD % ("nlpd-reload", port) + "pipeline = ( %s );\ninput: { text_field = ; };\n" % LANGID,
     r"nlpd\.conf:\d+: syntax error"),
    ("unknown stage", HEAD % ("nlpd-reload", port) + 'pipeline = ( %s,\n  { stage = "nosuch"; } );\n' % LANGID,
     r'nlpd\.conf:\d+: unknown stage "nosuch"'),
    ("missing model", HEAD % ("nlpd-reload", port) +
     'pipeline = ( %s,\n  { stage = "sentiment"; model = "%s/missing-model"; } );\n' % (LANGID, tmp),
     r"nlpd\.conf:\d+: .*missing-model"),
    # sections of the wrong type used to leave NULL strings that the checks read (SIGSEGV)
    ("sections of the wrong type", HEAD.replace('log: { level = "info"; };', 'log = 5;') % ("nlpd-reload", port) +
     "pipeline = ( %s );\ninput = 5;\ncache = ( 1 );\n" % LANGID, r"nlpd\.conf:\d+: input must be a group"),
]
for k, (what, text, pattern) in enumerate(broken):
    write(text)
    consumed = metric(metrics(), "nlpd_records_consumed_total") or 0
    if not sighup_and_wait("invalid", k):
        nok("SIGHUP with a broken file (%s)" % what, "no result=\"invalid\"; log: " + log()[-400:])
        continue
    alive = p.poll() is None
    flowing = wait(lambda: (metric(metrics(), "nlpd_records_consumed_total") or 0) > consumed, 10)
    logged = re.search(r"reload: .*" + pattern, log()) and "still running on the current configuration" in log()
    if alive and flowing and logged:
        ok("SIGHUP with a broken file (%s): still running, FILE:LINE logged, result=\"invalid\"" % what)
    else:
        nok("SIGHUP with a broken file (%s)" % what, "alive %s, flowing %s, logged %s" % (alive, flowing, bool(logged)))
m = metrics()
if metric(m, "nlpd_config_last_reload_successful") == 0 and reloads("applied") == 0:
    ok("after refused reloads: nlpd_config_last_reload_successful 0, nothing applied")
else:
    nok("last_reload_successful", m[-300:])

# (b) a valid change: sentiment (Hugging Face folder) added, a langid option changed.
NEW = HEAD % ("nlpd-reload", port) + \
    'pipeline = ( { stage = "langid"; model = "%s"; threshold = 0.01; },\n  { stage = "sentiment"; model = "%s"; } );\n' % (lid, hf)
write(NEW)
t0 = metric(metrics(), "nlpd_config_last_reload_success_timestamp_seconds") or 0
at_hup = sent[0]
if sighup_and_wait("applied", 0):
    m = metrics()
    if ('nlpd_model_info{stage="sentiment",model="distilbert-seq-cls@sha256:' in m and
            (metric(m, "nlpd_config_last_reload_success_timestamp_seconds") or 0) > t0 and
            metric(m, "nlpd_config_last_reload_successful") == 1):
        ok("SIGHUP with a valid new pipeline: applied, model_info shows the new model, reload time moved")
    else:
        nok("applied reload metrics", m[-600:])
else:
    nok("SIGHUP with a valid new pipeline", "no result=\"applied\"; log: " + log()[-600:])
applied_at = sent[0]
wait(lambda: sent[0] >= applied_at + 400, 30)
m = metrics()
if (metric(m, "nlpd_stage_batch_padded_tokens_count", 'stage="sentiment"') or 0) > 0 and \
        'nlpd_stage_batch_padded_tokens_count{stage="langid"}' not in m:
    ok("nlpd_stage_batch_padded_tokens counts the transformer stage's batches (%d), none for langid" %
       metric(m, "nlpd_stage_batch_padded_tokens_count", 'stage="sentiment"'))
else:
    nok("padded-token histogram", "\n".join(l for l in m.splitlines() if "padded" in l)[:600])

# (b2) another valid change (every label's score) while a burst keeps the old pipeline busy.
write(NEW.replace('model = "%s"; }' % hf, 'model = "%s"; scores = true; }' % hf))
burst.set()
wait(lambda: sent[0] >= applied_at + 400 + BURST // 2, 30)
if sighup_and_wait("applied", 1):
    m = re.findall(r"finished its (\d+) batch\(es\) in flight", log())
    ok("second valid reload during a burst: applied (%s batch(es) in flight at the switch)" % (m[-1] if m else "?"))
else:
    nok("second valid reload", "no second result=\"applied\"; log: " + log()[-600:])
scores_at = sent[0]

# (c) a restart-only key changed, together with a pipeline change: refused whole.
write(HEAD % ("another-group", port) + "pipeline = ( %s );\n" % LANGID)
if sighup_and_wait("restart_required", 0):
    if re.search(r"reload: .*changes kafka\.group_id, which nlpd reads only at start: reload refused", log()):
        ok("SIGHUP changing kafka.group_id: refused, logged, result=\"restart_required\"")
    else:
        nok("restart_required log", log()[-400:])
else:
    nok("SIGHUP changing kafka.group_id", "no result=\"restart_required\"; log: " + log()[-400:])
refused_at = sent[0]

feeder.join()
prod.wait(timeout=60)
if not wait(lambda: (metric(metrics(), "nlpd_records_produced_total") or 0) >= N, 60):
    nok("every record delivered", "produced %s of %d" % (metric(metrics(), "nlpd_records_produced_total"), N))
# The embedded broker lives inside nlpd: read the output topic before stopping it.
out = subprocess.run([tool, "consume", bs, "out", "all", "30000"], capture_output=True, text=True)
recs = [json.loads(json.loads(l)["value"]) for l in out.stdout.splitlines() if l.strip()]
p.send_signal(signal.SIGTERM)
try:
    rc = p.wait(timeout=30)
except subprocess.TimeoutExpired:
    p.kill()
    rc = "timeout"
if rc == 0:
    ok("SIGTERM after the reloads: exit 0")
else:
    nok("SIGTERM", "exit %s" % rc)

ids = [r["id"] for r in recs]
dup, missing = len(ids) - len(set(ids)), len(set(range(N)) - set(int(i) for i in ids))
if dup == 0 and missing == 0 and len(ids) == N:
    ok("every record delivered exactly once while reloading (%d ids, no loss, no duplicate)" % N)
else:
    nok("exactly once", "%d records, %d duplicates, %d missing" % (len(ids), dup, missing))

# The swap is clean: in each input partition, offset order, records go from without sentiment to with it
# exactly once; everything produced after the apply has it (and still after the refused reload (c)), with the
# model named in meta.models; the first records do not.
by_part = {}
for r in recs:
    by_part.setdefault(r["source"]["partition"], []).append((r["source"]["offset"], r["sentiment"] is not None))
switches = [sum(1 for a, b in zip(v, v[1:]) if a[1] != b[1]) for v in (sorted(x) for x in by_part.values())]
late = [r for r in recs if int(r["id"]) >= applied_at]
bad_late = [r["id"] for r in late if r["sentiment"] is None or "sentiment" not in r["meta"]["models"]]
bad_late += [r["id"] for r in recs if int(r["id"]) >= scores_at and "scores" not in r["sentiment"]]
first = [r for r in recs if int(r["id"]) < 50]
if recs and all(sw <= 1 for sw in switches) and late and not bad_late and all(r["sentiment"] is None for r in first) \
        and sum(r["sentiment"] is not None for r in recs) >= N - applied_at:
    ok("records after the swap carry the new stage's output (%d of %d; one switch per partition; kept after the "
       "refused reload)" % (sum(r["sentiment"] is not None for r in recs), N))
else:
    nok("new stage's output after the swap", "switches %s, %d late without sentiment (e.g. %s)" %
        (switches, len(bad_late), bad_late[:3]))

# systemd: every RELOADING=1 (with MONOTONIC_USEC) is followed by READY=1 before the next one.
time.sleep(0.3)
stop_notes.set()
seq = [("RELOADING" if "RELOADING=1" in n else "READY") for n in notes if "RELOADING=1" in n or "READY=1" in n]
mono = all("MONOTONIC_USEC=" in n for n in notes if "RELOADING=1" in n)
if seq[:1] == ["READY"] and seq[1:] == ["RELOADING", "READY"] * (len(broken) + 3) and mono:
    ok("notify: READY=1, then RELOADING=1 (MONOTONIC_USEC) / READY=1 for each of the %d reloads" % (len(broken) + 3))
else:
    nok("notify order", "%s, MONOTONIC_USEC %s" % (seq, mono))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
