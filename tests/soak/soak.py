#!/usr/bin/python3
"""The chaos soak of `nlpd run` (issue 13; `make soak`; README, "Reliability").

The real daemon against librdkafka's mock cluster in a separate process (build/tests/tool_kafka mock, so that a
killed nlpd leaves the broker state behind) and a real redis-server (the results cache of every scenario), on
langid with the real lid.176 model. Scenarios: 20 SIGKILL/restart cycles, all brokers down, Redis killed and
SIGSTOPped, a stage 10x slower than the input, 2 MB poison records, SIGHUP with a broken file every 5 s.
It prints one table (scenario, records, lost, duplicates, what was measured, PASS/FAIL); exit 1 on a FAIL.

"Lost": a produced input record (every record is keyed by its id) that is neither in the output topic (by its
"id") nor in the dead-letter topic (by its key). Duplicates: output or dead-letter records beyond the first of
an id. After a SIGKILL a duplicate is allowed only at or past the offset the group had committed when nlpd died.

Usage: tests/soak/soak.py [NLPD_BINARY] (default build/nlpd), or --self-test (the duplicate rule on
made-up data). Environment:
  SOAK_RECORDS        records of the kill/restart scenario (default 100000); the others get a fifth of it each
  SOAK_ONLY           a regex of scenario tags to run: kill brokers redis slow poison hup
  SOAK_KILLS          SIGKILL/restart cycles (default 20)
  SOAK_OUTAGE_S       how long every broker is down (default 30)
  SOAK_REDIS_LATENCY_MS  the end-to-end latency bound while Redis is killed or stopped (default 2000)
  SOAK_SLOW_FACTOR    input rate over the slow pipeline's throughput (default 10)
  SOAK_MAX_INFLIGHT   flow.max_inflight of the slow scenario (default 500)
  SOAK_MAX_INFLIGHT_BYTES  flow.max_inflight_bytes of the slow scenario when nlpd has the key (default 8 MiB)
  SOAK_RSS_OVERHEAD_MB the fixed RSS overhead allowed on top of what nlpd's bound accounts for (default 48:
                      16 of allocator and thread-arena slack, 32 for oneDNN's primitive cache, at most 256
                      JIT-compiled products, which a decoder's ever-changing shapes fill). The bound: 3 x max_inflight_bytes (each record, its
                      decoded text, its output) + librdkafka's prefetch (a quarter of it, 1 to 64 MiB)
  SOAK_HUP_S          the SIGHUP scenario's length (default 60; a broken file every 5 s)
  SOAK_KAFKA_PROPERTIES  extra librdkafka properties for nlpd, "k=v,k=v" (for diagnosis)
  SOAK_KEEP=1         keep the working directory (its path is printed)
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.chdir(ROOT)
NLPD_SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/nlpd")
ENV = os.environ
RECORDS = int(ENV.get("SOAK_RECORDS", "100000"))
SMALL = max(1000, RECORDS // 5)
ONLY = ENV.get("SOAK_ONLY", "")
KILLS = int(ENV.get("SOAK_KILLS", "20"))
OUTAGE_S = float(ENV.get("SOAK_OUTAGE_S", "30"))
REDIS_LAT_MS = float(ENV.get("SOAK_REDIS_LATENCY_MS", "2000"))
SLOW_FACTOR = float(ENV.get("SOAK_SLOW_FACTOR", "10"))
MAX_INFLIGHT = int(ENV.get("SOAK_MAX_INFLIGHT", "500"))
MAX_INFLIGHT_BYTES = int(ENV.get("SOAK_MAX_INFLIGHT_BYTES", str(8 << 20)))
RSS_OVERHEAD_MB = float(ENV.get("SOAK_RSS_OVERHEAD_MB", "48"))
HUP_S = float(ENV.get("SOAK_HUP_S", "60"))
CORPUS = os.path.join(ROOT, "build/corpus/multilingual.txt")
MODEL = "models/lid.176.ftz"
MARIAN = "tests/fixtures/hf-tiny/marian-mt"
# The mock's group coordinator waits for a SIGKILLed member until its session times out: keep it short.
KPROPS = [("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "300"),
          # the mock answers a fetch only after fetch.wait.max.ms (no long-poll wake-up)
          ("fetch.wait.max.ms", "10"), ("fetch.error.backoff.ms", "10")]
# extra librdkafka properties for nlpd, "k=v,k=v" (diagnosis: e.g. message.max.bytes=16777216 lets the
# poison scenario run past today's refused 2 MB dead letters)
KPROPS += [tuple(kv.split("=", 1)) for kv in ENV.get("SOAK_KAFKA_PROPERTIES", "").split(",") if "=" in kv]

T = tempfile.mkdtemp(prefix="nlpd-soak.")
PROCS = []  # every process started here: (Popen, name)


def log(msg):
    print("# %s %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def now_ms():
    return int(time.time() * 1000)


def spawn(name, args, **kw):
    p = subprocess.Popen(args, **kw)
    PROCS.append((p, name))
    return p


def reap(p, sig=signal.SIGTERM, timeout=30):
    """Signals p (if it runs) and waits up to timeout s, then SIGKILL; returns its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()
    return p.returncode


def cleanup():
    for p, _ in PROCS:
        if p.poll() is None:
            try:
                if p.returncode is None:
                    os.kill(p.pid, signal.SIGCONT)  # a SIGSTOPped redis-server must be able to die
                p.terminate()
            except ProcessLookupError:
                pass
    for p, _ in PROCS:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if ENV.get("SOAK_KEEP"):
        print("# files kept in %s" % T)
    else:
        shutil.rmtree(T, ignore_errors=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- the peers ------------------------------------------------------------------------------------------------

class Mock:
    """tool_kafka mock in its own process: 3 brokers; "down N" / "up N" on its stdin."""

    def __init__(self, name, *topics):
        self.p = spawn("mock " + name, [TOOL_KAFKA, "mock", "8"] + list(topics), stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=open(os.path.join(T, name + ".mock.err"), "w"))
        self.boot = self.p.stdout.readline().decode().strip()
        if not self.boot:
            raise RuntimeError("the mock cluster did not start: " + open(os.path.join(T, name + ".mock.err")).read())

    def cmd(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def all(self, what):
        for b in (1, 2, 3):
            self.cmd("%s %d" % (what, b))

    def close(self):
        try:
            self.cmd("quit")
        except BrokenPipeError:
            pass
        reap(self.p, timeout=10)


class Redis:
    def __init__(self):
        self.port = free_port()
        self.p = None
        self.start()

    def start(self):
        self.p = spawn("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=open(os.path.join(T, "redis.log"), "a"),
                       stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")


class Nlpd:
    def __init__(self, conf, name):
        self.log = os.path.join(T, name + ".log")
        self.p = spawn("nlpd " + name, [NLPD, "run", "-c", conf], stdout=subprocess.DEVNULL,
                       stderr=open(self.log, "w"))

    def alive(self):
        return self.p.poll() is None

    def text(self):
        try:
            return open(self.log, errors="replace").read()
        except OSError:
            return ""

    def tail(self, n=4):
        return " | ".join(l.strip()[:160] for l in self.text().splitlines()[-n:])

    def wait_assigned(self, timeout, after=0):
        """Waits for an 'assigned N partition(s)' line past the first `after` of them; False on timeout or exit."""
        end = time.time() + timeout
        while time.time() < end and self.alive():
            if len(re.findall(r"assigned [1-9][0-9]* partition", self.text())) > after:
                return True
            time.sleep(0.1)
        return False

    def status(self, key):
        try:
            for l in open("/proc/%d/status" % self.p.pid):
                if l.startswith(key + ":"):
                    return int(l.split()[1])  # kB
        except (OSError, ValueError):
            pass
        return 0


def write_conf(path, boot, group, redis_port, pipeline=None, extra=""):
    props = ", ".join('("%s", "%s")' % kv for kv in KPROPS)
    pipeline = pipeline or '( { stage = "langid"; model = "%s"; } )' % MODEL
    with open(path, "w") as f:
        f.write('kafka: { brokers = "%s"; group_id = "%s"; input_topics = [ "in" ]; output_topic = "out";\n'
                '         dlq_topic = "dlq"; properties = ( %s ); };\n' % (boot, group, props))
        f.write('flow: { commit_interval_ms = 500; shutdown_timeout_ms = 15000; %s };\n' % extra)
        f.write('cache: { backend = "redis"; redis = "127.0.0.1:%d"; key_prefix = "soak:%s:"; };\n'
                % (redis_port, group))
        f.write('metrics: { listen = ""; };\n')
        f.write("pipeline = %s;\n" % pipeline)
    return path


def texts():
    return [t for t in open(CORPUS, encoding="utf-8").read().split("\n") if t.strip()]


def gen(name, n, prefix, unique=False, poison_every=0, blob=0):
    """Writes n KEY<TAB>JSON lines (key = id) to T/name.in; returns (path, ids, poison ids)."""
    rnd = random.Random(n * 7 + len(prefix))
    corpus = texts()
    path = os.path.join(T, name + ".in")
    ids, poison = [], set()
    used_parts = {}
    with open(path, "wb") as f:
        for i in range(n):
            rid = "%s%d" % (prefix, i)
            if poison_every and i % poison_every == poison_every - 1:
                # Keys spread over the partitions of a 64-partition topic (crc32, librdkafka's consistent_random
                # partitioner): the mock keeps 5 MB a partition, so 2 MB dead letters must not pile up in one.
                k = 0
                while used_parts.get(zlib.crc32(("%s-%d" % (rid, k)).encode()) % 64, 0) > len(poison) // 64:
                    k += 1
                rid = "%s-%d" % (rid, k)
                used_parts[zlib.crc32(rid.encode()) % 64] = used_parts.get(zlib.crc32(rid.encode()) % 64, 0) + 1
                kind = len(poison) % 3
                if kind == 0:
                    val = ('{"id": "%s", "text": "%s"}' % (rid, ("lorem ipsum dolor " * 120000)[:2 << 20])).encode()
                elif kind == 1:
                    val = b"[" * (2 << 20)
                else:  # invalid UTF-8 (no newline or tab byte)
                    val = bytes(0x80 + (j * 37) % 0x7f for j in range(2 << 20))
                poison.add(rid)
            else:
                text = rnd.choice(corpus)
                if unique:
                    text += " %d" % i
                o = {"id": rid, "text": text}
                if blob:
                    o["blob"] = "b" * blob
                val = json.dumps(o, ensure_ascii=False).encode()
            ids.append(rid)
            f.write(rid.encode() + b"\t" + val + b"\n")
    return path, ids, poison


def feed(boot, path, rate, name):
    return spawn("feed " + name, [TOOL_SOAK, "feed", boot, "in", "%g" % rate], stdin=open(path, "rb"),
                 stdout=open(os.path.join(T, name + ".feed.out"), "w"),
                 stderr=open(os.path.join(T, name + ".feed.err"), "w"))


def dump(boot, topic, timeout_ms=120000):
    r = subprocess.run([TOOL_SOAK, "dump", boot, topic, str(timeout_ms)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout_ms / 1000 + 60)
    return [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]


def committed(boot, group):
    r = subprocess.run([TOOL_KAFKA, "committed", boot, group, "in"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    try:
        return {int(k): v for k, v in json.loads(r.stdout.decode()).items()}
    except ValueError:
        return None


def ledger(ids, boot):
    """(out records, dlq records, lost ids, duplicate records) for the input ids."""
    out = dump(boot, "out")
    dlq = dump(boot, "dlq")
    seen = {}
    for r in out:
        if r.get("id") is not None:
            seen[r["id"]] = seen.get(r["id"], 0) + 1
    for r in dlq:
        if r.get("key") is not None:
            seen[r["key"]] = seen.get(r["key"], 0) + 1
    lost = [i for i in ids if i not in seen]
    dups = sum(c - 1 for c in seen.values() if c > 1)
    return out, dlq, lost, dups


def wait_all(ids, boot, timeout, nlpd=None, stall=30):
    """Polls out + dlq until every id is there, or timeout, or nlpd exited, or nothing new arrived for stall s;
    returns ledger()."""
    end = time.time() + timeout
    last, since = None, time.time()
    while True:
        res = ledger(ids, boot)
        if not res[2] or time.time() >= end:
            return res
        if nlpd is not None and not nlpd.alive():
            time.sleep(1)
            return ledger(ids, boot)
        if len(res[2]) != last:
            last, since = len(res[2]), time.time()
        elif time.time() - since >= stall:
            return res
        time.sleep(2)


def pct(xs, q):
    if not xs:
        return 0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Row:
    def __init__(self, name, records):
        self.name, self.records = name, records
        self.lost = self.dups = "-"
        self.measured = []
        self.problems = []

    def fail(self, why):
        self.problems.append(why)

    def ok(self):
        return not self.problems


def stop_nlpd(row, n, what="nlpd"):
    """SIGTERM; a status other than 0 is a problem."""
    if not n.alive():
        rc = n.p.returncode
        row.fail("%s had exited (%s): %s" % (what, rc, n.tail()))
        return rc
    m = re.search(r"stopped: [^\n]*", n.text())
    if m:
        row.fail("%s had logged '%s' but was still running (hung after stopping)" % (what, m.group(0)[:80]))
    rc = reap(n.p, signal.SIGTERM, 60)
    if rc != 0:
        row.fail("%s exited %s after SIGTERM: %s" % (what, rc, n.tail()))
    return rc


def lost_check(row, lost, ids):
    row.lost = len(lost)
    if lost:
        row.fail("%d of %d records lost, e.g. %s" % (len(lost), len(ids), lost[:3]))


def kill_duplicates(out, kills):
    """(duplicates, bad ones, examples): each output record's epoch is the number of kills before its producer
    timestamp; a record produced again in epoch e >= 1 must be at or past the offset committed when kill e
    (kills[e - 1]: (time ms, {partition: committed offset})) left the group; one produced twice in the same
    epoch had no crash to excuse it."""
    by_src = {}
    for r in out:
        if r.get("sp") is not None:
            by_src.setdefault((r["sp"], r["so"]), []).append(r["ts"])
    ktimes = [k[0] for k in kills]
    dups = bad = 0
    examples = []
    for (p, o), tss in sorted(by_src.items()):
        epochs = sorted(sum(1 for kt in ktimes if kt < ts) for ts in tss)
        for prev, e in zip(epochs, epochs[1:]):
            dups += 1
            c = kills[e - 1][1].get(p, -1) if e >= 1 else None
            if e == prev or c is None or o < max(c, 0):
                bad += 1
                if len(examples) < 3:
                    examples.append("in[%d]@%d twice (epochs %d, %d; committed then %s)" % (p, o, prev, e, c))
    return dups, bad, examples


def self_test():
    """The checks on made-up data: each must accept what is allowed and catch what is not."""
    rec = lambda p, o, ts: {"sp": p, "so": o, "ts": ts, "id": "x%d" % o}
    kills = [(1000, {0: 10, 1: 5}), (2000, {0: 20, 1: 5})]
    cases = [
        ([rec(0, 12, 500), rec(0, 12, 1500)], (1, 0)),   # past the commit of kill 1: allowed
        ([rec(0, 9, 500), rec(0, 9, 1500)], (1, 1)),     # below it: committed before delivery
        ([rec(1, 7, 1200), rec(1, 7, 1300)], (1, 1)),    # twice in one epoch: no crash between
        ([rec(0, 15, 500), rec(0, 15, 1500), rec(0, 15, 2500)], (2, 1)),  # third copy below kill 2's commit
        ([rec(1, 3, 100)], (0, 0)),
    ]
    bad = 0
    for out, want in cases:
        got = kill_duplicates(out, kills)[:2]
        if got != want:
            print("self-test: %s: got %s, want %s" % (out, got, want))
            bad += 1
    print("self-test: %d of %d cases right" % (len(cases) - bad, len(cases)))
    return 1 if bad else 0


# ---- scenarios -----------------------------------------------------------------------------------------------

def sc_kill(redis):
    """KILLS SIGKILL/restart cycles at random points while RECORDS records stream in."""
    row = Row("%d x SIGKILL/restart" % KILLS, RECORDS)
    mock = Mock("kill", "in:8", "out:64", "dlq:8")
    try:
        conf = write_conf(os.path.join(T, "kill.conf"), mock.boot, "gkill", redis.port)
        path, ids, _ = gen("kill", RECORDS, "k")
        n = Nlpd(conf, "kill.0")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        # The stream lasts about KILLS cycles of ~8 s (a restart waits for the dead member's session to expire).
        rate = max(50.0, RECORDS / (KILLS * 8.0))
        t0 = time.time()
        fd = feed(mock.boot, path, rate, "kill")
        span = RECORDS / rate
        points = sorted(random.uniform(0.02, 0.98) * span for _ in range(KILLS))
        kills = []  # (time ms, committed offsets then)
        joins = []
        for i, at in enumerate(points):
            # at a random point of the stream, or soon after the restart if that point has passed
            delay = max(at - (time.time() - t0), random.uniform(0.1, 1.5))
            time.sleep(delay)
            if not n.alive():
                row.fail("nlpd exited (%s) before kill %d: %s" % (n.p.returncode, i + 1, n.tail()))
                break
            kt = now_ms()
            n.p.kill()
            n.p.wait()
            com = committed(mock.boot, "gkill")
            if com is None:
                row.fail("no committed offsets after kill %d" % (i + 1))
                com = {}
            kills.append((kt, com))
            n = Nlpd(conf, "kill.%d" % (i + 1))
            j0 = time.time()
            if not n.wait_assigned(90):
                row.fail("restart %d: no partition assigned within 90 s: %s" % (i + 1, n.tail()))
                break
            joins.append(time.time() - j0)
        fd_rc = reap(fd, signal.SIGCONT, 600)  # (SIGCONT: a no-op; waits for the feed to end)
        if fd_rc != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "kill.feed.err")).read()[-300:])
        out, dlq, lost, _ = wait_all(ids, mock.boot, 240, n)
        stop_nlpd(row, n)
        out, dlq, lost, _ = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        dups, bad, examples = kill_duplicates(out, kills)
        row.dups = dups
        if bad:
            row.fail("%d duplicate(s) below the committed offset or without a kill between, e.g. %s"
                     % (bad, "; ".join(examples)))
        if dlq:
            row.fail("%d unexpected dead letter(s), e.g. %s" % (len(dlq), dlq[0].get("err")))
        row.measured.append("%d kills, restart to assignment %.1f-%.1f s; %d duplicates below the commit"
                            % (len(kills), min(joins or [0]), max(joins or [0]), bad))
        log("kill: %d kills in %.0f s, %d duplicates, %d lost" % (len(kills), time.time() - t0, dups, len(lost)))
    finally:
        mock.close()
    return row


def sc_brokers(redis):
    row = Row("all brokers down %g s" % OUTAGE_S, SMALL)
    mock = Mock("brokers", "in:8", "out:32", "dlq:8")
    try:
        conf = write_conf(os.path.join(T, "brokers.conf"), mock.boot, "gbrokers", redis.port)
        path, ids, _ = gen("brokers", SMALL, "b")
        n = Nlpd(conf, "brokers")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        rate = SMALL / (OUTAGE_S + 20.0)  # the stream goes on through the outage
        fd = feed(mock.boot, path, rate, "brokers")
        time.sleep(8)
        mock.all("down")
        t_down = time.time()
        died = None
        while time.time() - t_down < OUTAGE_S:
            if died is None and not n.alive():
                died = time.time() - t_down
            time.sleep(0.2)
        mock.all("up")
        t_up = time.time()
        if reap(fd, signal.SIGCONT, 600) != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "brokers.feed.err")).read()[-300:])
        out, dlq, lost, dups = wait_all(ids, mock.boot, 180, n)
        t_all = time.time() - t_up
        if died is not None:
            row.fail("nlpd exited %s s into the outage: %s" % (round(died, 1), n.tail()))
        stop_nlpd(row, n)
        out, dlq, lost, dups = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        row.dups = dups
        row.measured.append("every record out %.1f s after the brokers came back" % t_all
                            if not lost else "%d records missing" % len(lost))
    finally:
        mock.close()
    return row


def sc_redis(redis):
    row = Row("Redis SIGKILL + SIGSTOP", SMALL)
    mock = Mock("redis", "in:8", "out:32", "dlq:8")
    try:
        conf = write_conf(os.path.join(T, "redis.conf"), mock.boot, "gredis", redis.port)
        path, ids, _ = gen("redis", SMALL, "r")
        n = Nlpd(conf, "redis")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        rate = SMALL / 40.0
        t0 = now_ms()
        fd = feed(mock.boot, path, rate, "redis")
        time.sleep(8)
        f0 = now_ms()
        redis.p.kill()  # SIGKILL mid-stream; back after 5 s (empty: no persistence)
        redis.p.wait()
        time.sleep(5)
        redis.start()
        time.sleep(5)
        redis.p.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        time.sleep(8)
        redis.p.send_signal(signal.SIGCONT)
        f1 = now_ms()
        if reap(fd, signal.SIGCONT, 600) != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "redis.feed.err")).read()[-300:])
        out, dlq, lost, dups = wait_all(ids, mock.boot, 120, n)
        stop_nlpd(row, n)
        out, dlq, lost, dups = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        row.dups = dups
        # End-to-end latency: output timestamp (nlpd's producer) minus the input's (the feed's producer).
        healthy = [r["ts"] - r["sts"] for r in out if r.get("sts") and t0 <= r["sts"] < f0]
        faults = [r["ts"] - r["sts"] for r in out if r.get("sts") and f0 <= r["sts"] <= f1]
        worst = max(faults or [0])
        row.measured.append("latency p99/max healthy %d/%d ms, during faults %d/%d ms (bound %d)"
                            % (pct(healthy, 0.99), max(healthy or [0]), pct(faults, 0.99), worst, REDIS_LAT_MS))
        if not faults:
            row.fail("no record was processed while Redis was down or stopped")
        elif worst > REDIS_LAT_MS:
            slow = sum(1 for x in faults if x > REDIS_LAT_MS)
            row.fail("%d record(s) over %d ms end to end while Redis was killed/stopped (max %d ms)"
                     % (slow, REDIS_LAT_MS, worst))
    finally:
        if redis.p.poll() is None:
            redis.p.send_signal(signal.SIGCONT)
        else:
            redis.start()
        mock.close()
    return row


def has_key(key):
    r = subprocess.run([NLPD, "config-doc"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return ("  %s " % key) in r.stdout.decode()


def sc_slow(redis):
    row = Row("stage %gx slower than input" % SLOW_FACTOR, SMALL)
    slow_pipe = ('( { stage = "langid"; model = "%s"; },\n  { stage = "translate"; model = "%s"; target_lang = "xx"; '
                 'num_beams = 4; when = "lang.code != \'xx\'"; } )' % (MODEL, MARIAN))
    mock = Mock("slow", "in:64", "out:32", "dlq:8")
    try:
        # 8 KB records: at the default size the input (160 MB) is twice the RSS bound, so an unbounded daemon
        # cannot pass; 64 partitions keep each under the mock's 5 MB a partition.
        path, ids, _ = gen("slow", SMALL, "s", unique=True, blob=8000)
        # The pipeline's own throughput, in pipe mode on the first 1000 records (no cache: every text is new).
        pconf = os.path.join(T, "slowpipe.conf")
        with open(pconf, "w") as f:
            f.write('cache: { backend = "none"; };\npipeline = %s;\n' % slow_pipe)
        sample = b"".join(l.split(b"\t", 1)[1] for l in open(path, "rb").readlines()[:1000])
        t = time.time()
        subprocess.run([NLPD, "pipe", "-c", pconf], input=sample, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        thr = 1000 / (time.time() - t)
        bytes_key = has_key("flow.max_inflight_bytes")
        extra = "max_inflight = %d;" % MAX_INFLIGHT
        biggest = max(len(l) for l in open(path, "rb"))
        if bytes_key:
            extra += " max_inflight_bytes = %d;" % MAX_INFLIGHT_BYTES
            bound = MAX_INFLIGHT_BYTES
        else:
            bound = MAX_INFLIGHT * biggest
        conf = write_conf(os.path.join(T, "slow.conf"), mock.boot, "gslow", redis.port, slow_pipe, extra)
        n = Nlpd(conf, "slow")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        time.sleep(1)
        base = n.status("VmRSS")
        rate = SLOW_FACTOR * thr
        t0 = time.time()
        fd = feed(mock.boot, path, rate, "slow")
        peak = base
        end = time.time() + max(120, 4 * SMALL / thr)
        got_all = False
        last_check = 0
        samples = []
        while time.time() < end and n.alive():
            samples.append(n.status("VmRSS"))
            peak = max(peak, samples[-1])
            if time.time() - last_check > 5 and fd.poll() is not None:
                last_check = time.time()
                if not ledger(ids, mock.boot)[2]:
                    got_all = True
                    break
            time.sleep(0.2)
        took = time.time() - t0
        hwm = n.status("VmHWM")
        if reap(fd, signal.SIGCONT, 60) != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "slow.feed.err")).read()[-300:])
        stop_nlpd(row, n)
        out, dlq, lost, dups = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        row.dups = dups
        # nlpd's stated bound (README, "Memory and backpressure"): 3 bytes per in-flight byte, plus the prefetch
        # it gives librdkafka (a quarter of max_inflight_bytes, 1 to 64 MiB), plus fixed slack.
        prefetch = min(max(bound // 4, 1 << 20), 64 << 20) if bytes_key else 64 << 20
        limit = base + (3 * bound + prefetch) / 1024 + RSS_OVERHEAD_MB * 1024
        row.measured.append("pipeline %.0f rec/s, input %.0f rec/s; RSS %d MiB at start, peak %d MiB (HWM %d), "
                            "bound %d MiB = start + 3 x %s %d MiB + prefetch %d MiB + %d MiB; %.0f s"
                            % (thr, rate, base // 1024, peak // 1024, hwm // 1024, limit // 1024,
                               "max_inflight_bytes" if bytes_key else "max_inflight x %d B" % biggest,
                               bound >> 20, prefetch >> 20, RSS_OVERHEAD_MB, took))
        total = os.path.getsize(path)
        q = [max(samples[len(samples) * k // 4:len(samples) * (k + 1) // 4] or [0]) >> 10 for k in range(4)]
        row.measured.append("input %d MiB in all; peak RSS by quarter of the run %s MiB" % (total >> 20, q))
        if max(peak, hwm) > limit:
            row.fail("peak RSS %d MiB over the bound %d MiB" % (max(peak, hwm) // 1024, limit // 1024))
    finally:
        mock.close()
    return row


def sc_poison(redis):
    row = Row("2 MB poison every 1000", SMALL)
    mock = Mock("poison", "in:32", "out:32", "dlq:64")
    try:
        conf = write_conf(os.path.join(T, "poison.conf"), mock.boot, "gpoison", redis.port)
        path, ids, poison = gen("poison", SMALL, "p", poison_every=1000)
        n = Nlpd(conf, "poison")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        fd = feed(mock.boot, path, SMALL / 20.0, "poison")
        died = None
        t0 = time.time()
        while fd.poll() is None:
            if died is None and not n.alive():
                died = time.time() - t0
            time.sleep(0.2)
        if fd.returncode != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "poison.feed.err")).read()[-300:])
        out, dlq, lost, dups = wait_all(ids, mock.boot, 90, n)
        if died is None and not n.alive():
            died = time.time() - t0
        if died is not None:
            row.fail("nlpd exited (%s) %.1f s into the stream: %s" % (n.p.returncode, died, n.tail(3)))
        stop_nlpd(row, n)
        out, dlq, lost, dups = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        row.dups = dups
        dl = {r.get("key") for r in dlq}
        reasons = sorted({(r.get("err") or "?")[:40] for r in dlq})
        row.measured.append("%d poison records, %d dead-lettered (%s); %d good out"
                            % (len(poison), len(dl & poison), "; ".join(reasons[:3]) or "-",
                               len({r.get("id") for r in out} - poison)))
    finally:
        mock.close()
    return row


def broken_files(good):
    """(what, content) pairs: every way a config file can be broken, and a valid one it must refuse."""
    g = good.decode()
    return [
        ("truncated", good[: len(good) // 2]),
        ("unknown stage", g.replace('stage = "langid"', 'stage = "no_such_stage"').encode()),
        ("missing model", g.replace(MODEL, "models/missing.ftz").encode()),
        ("corrupt model", g.replace(MODEL, os.path.join(T, "corrupt.ftz")).encode()),
        ("empty file", b""),
        ("binary garbage", bytes(random.Random(7).randrange(256) for _ in range(4096))),
        ("wrong type", g.replace("flow: {", 'flow: { max_inflight = "many";').encode()),
        ("out of range", g.replace("flow: {", "flow: { max_inflight = 99999999999;").encode()),
        ("deep nesting", b"x = " + b"(" * 100000 + b";\n"),
        ("restart-only key", g.replace('group_id = "ghup"', 'group_id = "other"').encode()),
        ("file removed", None),
        ("3 SIGHUPs at once, truncated", good[: len(good) // 3]),
    ]


def sc_hup(redis):
    row = Row("SIGHUP + broken file / 5 s", SMALL)
    mock = Mock("hup", "in:8", "out:32", "dlq:8")
    try:
        conf = write_conf(os.path.join(T, "hup.conf"), mock.boot, "ghup", redis.port)
        good = open(conf, "rb").read()
        with open(os.path.join(T, "corrupt.ftz"), "wb") as f:
            f.write(open(MODEL, "rb").read()[:4096])
        path, ids, _ = gen("hup", SMALL, "h")
        n = Nlpd(conf, "hup")
        if not n.wait_assigned(60):
            row.fail("no partition assigned within 60 s: " + n.tail())
            reap(n.p)
            return row
        fd = feed(mock.boot, path, SMALL / HUP_S, "hup")
        files = broken_files(good)
        sent = 0
        t0 = time.time()
        i = 0
        while time.time() - t0 < HUP_S and n.alive():
            what, content = files[i % len(files)]
            i += 1
            if content is None:
                os.unlink(conf)
            else:
                with open(conf, "wb") as f:
                    f.write(content)
            for _ in range(3 if what.startswith("3 SIGHUPs") else 1):
                n.p.send_signal(signal.SIGHUP)
                sent += 1
            time.sleep(5)
        if not n.alive():
            row.fail("nlpd exited (%s) after %d SIGHUP(s), the last with a %s: %s"
                     % (n.p.returncode, sent, what, n.tail(3)))
        with open(conf, "wb") as f:
            f.write(good)
        if reap(fd, signal.SIGCONT, 300) != 0:
            row.fail("the feed failed: " + open(os.path.join(T, "hup.feed.err")).read()[-300:])
        out, dlq, lost, dups = wait_all(ids, mock.boot, 90, n)
        text = n.text()
        stop_nlpd(row, n)
        out, dlq, lost, dups = ledger(ids, mock.boot)
        lost_check(row, lost, ids)
        row.dups = dups
        applied = len(re.findall(r"reload: applied", text))
        refused = len(re.findall(r"reload: .*still running on the current configuration", text))
        row.measured.append("%d SIGHUPs, %d kinds of broken file: %d reloads refused, %d applied"
                            % (sent, min(i, len(files)), refused, applied))
        if applied:
            row.fail("a broken file was applied %d time(s)" % applied)
    finally:
        mock.close()
    return row


SCENARIOS = [("kill", sc_kill), ("brokers", sc_brokers), ("redis", sc_redis), ("slow", sc_slow),
             ("poison", sc_poison), ("hup", sc_hup)]


def table(rows):
    head = ("scenario", "records", "lost", "duplicates", "measured", "result")
    cells = [head] + [(r.name, str(r.records), str(r.lost), str(r.dups), "; ".join(r.measured) or "-",
                       "PASS" if r.ok() else "FAIL") for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(head))]
    line = lambda c: "| " + " | ".join(x.ljust(w[i]) for i, x in enumerate(c)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for c in cells[1:]:
        print(line(c))
    for r in rows:
        for p in r.problems:
            print("# FAIL %s: %s" % (r.name, p[:600]))


def main():
    global NLPD, TOOL_KAFKA, TOOL_SOAK
    for f, why in ((NLPD_SRC, "run make"), ("build/tests/tool_kafka", "run make"), ("build/tests/tool_soak", "run make"),
                   (MODEL, "run make models")):
        if not os.path.exists(f):
            print("soak: %s missing (%s)" % (f, why))
            return 2
    if shutil.which("redis-server") is None:
        print("soak: redis-server missing (make deps)")
        return 2
    if not os.path.exists(CORPUS):
        subprocess.run(["sh", "scripts/make-corpora.sh"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Private copies: a rebuild must not pull a binary from under the soak.
    NLPD, TOOL_KAFKA, TOOL_SOAK = (shutil.copy(s, os.path.join(T, os.path.basename(s)))
                                   for s in (NLPD_SRC, "build/tests/tool_kafka", "build/tests/tool_soak"))
    log("soak: %s, %d records (others %d), work dir %s" % (NLPD_SRC, RECORDS, SMALL, T))
    redis = Redis()
    rows = []
    t0 = time.time()
    for tag, fn in SCENARIOS:
        if ONLY and not re.search(ONLY, tag):
            continue
        log("scenario %s" % tag)
        ts = time.time()
        try:
            row = fn(redis)
        except Exception as e:  # a harness failure is a FAIL of its scenario, never a hang or a lost table
            row = Row(tag, 0)
            row.fail("harness error: %r" % e)
        row.measured.append("%.0f s" % (time.time() - ts))
        rows.append(row)
    print()
    table(rows)
    print("# soak took %.0f s" % (time.time() - t0))
    return 0 if all(r.ok() for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        shutil.rmtree(T, ignore_errors=True)
        sys.exit(self_test())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        rc = main()
    finally:
        cleanup()
    sys.exit(rc)
