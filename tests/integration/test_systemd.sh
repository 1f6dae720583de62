#!/bin/bash
# systemd integration: the unit passes `systemd-analyze verify` silently, and `nlpd run` speaks the notify
# protocol to a fake NOTIFY_SOCKET in the right order: READY=1 once the consumer starts, WATCHDOG=1 at half
# the interval, STATUS= lines, RELOADING=1 then READY=1 around SIGHUP (a broken config keeps it running),
# STOPPING=1 on SIGTERM, exit 0.
# usage: tests/integration/test_systemd.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
. tests/lib.sh
NLPD=$(realpath "${1:-build/nlpd}")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

if command -v systemd-analyze > /dev/null; then
    sed "s|/usr/local/bin/nlpd|$NLPD|" systemd/nlpd.service > "$T/nlpd.service"
    out=$(systemd-analyze verify "$T/nlpd.service" 2>&1)
    if [ -z "$out" ]; then ok "systemd-analyze verify prints nothing"; else nok "systemd-analyze verify" "$out"; fi
    # exposure: systemd's own score of the sandbox, 0 (locked down) to 10; the issue asks for 2.0 or less
    exposure() { systemd-analyze security --offline=true "$1" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'; }
    score=$(exposure "$T/nlpd.service")
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
        ok "systemd-analyze security: exposure $score (<= 2.0)"
    else
        nok "systemd-analyze security" "exposure '$score' > 2.0: $(systemd-analyze security --offline=true "$T/nlpd.service" 2>&1 | grep -c '✗') settings missing"
    fi
    # The GPU drop-in, where systemd looks for it (nlpd.service.d/ beside the unit): still valid, the NVIDIA
    # devices and the driver's /proc files open, and the exposure still within 2.0.
    mkdir -p "$T/nlpd.service.d"
    cp systemd/nlpd-gpu.conf "$T/nlpd.service.d/gpu.conf"
    out=$(cd "$T" && systemd-analyze verify ./nlpd.service 2>&1)
    gscore=$(cd "$T" && exposure nlpd.service)
    devs=$(cd "$T" && systemd-analyze security --offline=true nlpd.service 2>&1 | grep -o 'char-nvidia-[a-z]*' | sort -u | tr '\n' ' ')
    if [ -z "$out" ] && [ "$devs" = "char-nvidia-caps char-nvidia-frontend char-nvidia-uvm " ] && [ -n "$gscore" ] &&
        awk -v s="$gscore" -v b="$score" 'BEGIN { exit !(s <= 2.0 && s > b) }'; then
        ok "GPU drop-in: verifies, opens $devs, exposure $gscore"
    else
        nok "GPU drop-in" "verify: $out; devices: $devs; exposure $gscore"
    fi
    rm -r "$T/nlpd.service.d"
else
    echo "skip: systemd-analyze not installed"
fi

if [ ! -f models/lid.176.ftz ]; then
    echo "skip: models/lid.176.ftz missing (make models)"
    finish
fi
cat > "$T/nlpd.conf" << EOF
kafka: { brokers = "embedded"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq"; };
flow: { shutdown_timeout_ms = 5000; };
log: { level = "info"; };
pipeline = ( { stage = "langid"; model = "$PWD/models/lid.176.ftz"; } );
EOF
python3 - "$NLPD" "$T" << 'PY' > "$T/result" 2>&1
import os, signal, socket, subprocess, sys, time
nlpd, tmp = sys.argv[1], sys.argv[2]
path = os.path.join(tmp, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.2)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
log = open(os.path.join(tmp, "nlpd.log"), "w")
p = subprocess.Popen([nlpd, "run", "-c", os.path.join(tmp, "nlpd.conf")], env=env, stdout=log, stderr=log)
msgs = []

def collect(until, cond=lambda: False):
    while time.time() < until and not cond():
        try:
            msgs.extend(sock.recv(4096).decode().split("\n"))
        except socket.timeout:
            pass

collect(time.time() + 60, lambda: "READY=1" in msgs)
assert "READY=1" in msgs, ("no READY=1", msgs)
collect(time.time() + 1.5)
assert msgs.count("WATCHDOG=1") >= 3, ("watchdog", msgs.count("WATCHDOG=1"))
assert any(m.startswith("STATUS=") for m in msgs), msgs
# A broken config on SIGHUP: RELOADING=1, then READY=1 again, and still running.
with open(os.path.join(tmp, "nlpd.conf"), "a") as f:
    f.write("\nbatch: { max_records = \"many\"; };\n")
n_before = len(msgs)
p.send_signal(signal.SIGHUP)
collect(time.time() + 20, lambda: "READY=1" in msgs[n_before:])
tail = msgs[n_before:]
assert "RELOADING=1" in tail and "READY=1" in tail[tail.index("RELOADING=1"):], tail
time.sleep(0.3)
assert p.poll() is None, "nlpd exited after SIGHUP"
p.send_signal(signal.SIGTERM)
rc = p.wait(timeout=30)
collect(time.time() + 0.5)
assert rc == 0, rc
assert "STOPPING=1" in msgs, msgs
order = [m for m in msgs if m in ("READY=1", "STOPPING=1")]
assert order[0] == "READY=1" and order[-1] == "STOPPING=1", order
print("ok", msgs.count("WATCHDOG=1"), "watchdog pings,", sum(m.startswith("STATUS=") for m in msgs), "status lines")
PY
if grep -q '^ok' "$T/result"; then
    ok "notify protocol: READY, WATCHDOG, STATUS, RELOADING/READY on SIGHUP, STOPPING ($(tail -n 1 "$T/result"))"
else
    nok "notify protocol" "$(tail -n 3 "$T/result"); log: $(tail -n 3 "$T/nlpd.log" | tr '\n' '|')"
fi
if grep -q 'reload: .*batch.max_records must be an integer' "$T/nlpd.log" &&
    grep -q 'still running on the current configuration' "$T/nlpd.log"; then
    ok "SIGHUP with a broken config logs FILE:LINE errors and keeps running"
else
    nok "SIGHUP with a broken config" "$(grep reload "$T/nlpd.log" | head -n 3)"
fi

# The unit's SystemCallFilter (@system-service minus @privileged and @resources) must allow every system call
# nlpd makes: run it under strace while records flow, /metrics is scraped and a SIGHUP reload happens.
TOOL=$(dirname "$NLPD")/tests/tool_kafka
if command -v strace > /dev/null && command -v systemd-analyze > /dev/null && [ -x "$TOOL" ] &&
    strace -f -o /dev/null true 2> /dev/null; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat > "$T/sc.conf" << EOF
kafka: { brokers = "embedded"; input_topics = ["in"]; output_topic = "out"; dlq_topic = "dlq"; };
metrics: { listen = "127.0.0.1:$PORT"; };
flow: { shutdown_timeout_ms = 5000; };
pipeline = ( { stage = "langid"; model = "$PWD/models/lid.176.ftz"; } );
EOF
    strace -f -qq -c -o "$T/strace.txt" "$NLPD" run -c "$T/sc.conf" > "$T/sc.log" 2>&1 &
    spid=$!
    bs=
    for _ in $(seq 150); do
        bs=$(grep -o 'embedded broker at [0-9.]*:[0-9]*' "$T/sc.log" | awk '{print $4}')
        [ -n "$bs" ] && grep -q 'assigned' "$T/sc.log" && break
        sleep 0.2
    done
    npid=$(pgrep -P "$spid" -x nlpd | head -n 1)
    for i in $(seq 50); do echo "{\"id\":\"$i\",\"text\":\"record $i in plain English\"}"; done |
        timeout 60 "$TOOL" produce "$bs" in > /dev/null 2>&1
    for _ in $(seq 100); do
        curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^nlpd_records_produced_total 50$' && break
        sleep 0.2
    done
    [ -n "$npid" ] && kill -HUP "$npid" && sleep 1 && kill -TERM "$npid"
    [ -z "$npid" ] && pkill -KILL -P "$spid" # no process named nlpd under strace: fail below, never wait forever
    wait "$spid"
    if out=$(python3 - "$T/strace.txt" << 'PY' 2>&1
import re, subprocess, sys
groups, cur = {}, None
for ln in subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout.splitlines():
    if ln.startswith("@"):
        cur = groups.setdefault(ln.strip(), [])
    elif cur is not None and ln.strip() and not ln.strip().startswith("#"):
        cur.append(ln.strip())
def expand(g, seen=()):
    out = set()
    for m in groups[g]:
        out |= expand(m, seen + (g,)) if m.startswith("@") and m not in seen else {m}
    return out
allowed = expand("@system-service") - expand("@privileged") - expand("@resources")
used = set()
for ln in open(sys.argv[1]):
    f = ln.split()
    if f and f[0][0].isdigit() and re.fullmatch(r"[a-z_0-9]+", f[-1]) and f[-1] != "total":
        used.add(f[-1])
assert len(used) > 20, ("strace saw too little", sorted(used))
# Refused with EPERM (SystemCallErrorNumber) and harmless: OpenBLAS asks for NUMA placement and ignores the answer.
tolerated = {"mbind"}
assert tolerated <= expand("@resources")
bad = sorted(used - allowed - tolerated)
assert not bad, "outside the unit's SystemCallFilter: " + " ".join(bad)
print(len(used), "system calls, all allowed" + (" (mbind refused, harmless)" if "mbind" in used else ""))
PY
    ) && grep -q 'stopped: 50 consumed' "$T/sc.log"; then
        ok "every system call of nlpd run (records, /metrics, SIGHUP, SIGTERM) is in the unit's filter: $out"
    else
        nok "system call filter" "$out; $(tail -n 2 "$T/sc.log" | tr '\n' '|')"
    fi
else
    echo "skip: system call check needs strace (ptrace allowed), systemd-analyze and $TOOL"
fi
finish
