#!/bin/bash
# systemd integration: the unit passes `systemd-analyze verify` silently, and `nlpd run` speaks the notify
# protocol to a fake NOTIFY_SOCKET in the right order: READY=1 once the consumer starts, WATCHDOG=1 at half
# the interval, STATUS= lines, RELOADING=1 then READY=1 around SIGHUP (a broken config keeps it running),
# STOPPING=1 on SIGTERM, exit 0.
# usage: tests/integration/test_systemd.sh [path/to/nlpd]   Prints `N passed, N failed`.
set -u
cd "$(dirname "$0")/../.." || exit 2
NLPD=$(realpath "${1:-build/nlpd}")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
nok() { echo "not ok - $1: $2"; fail=$((fail + 1)); }

if command -v systemd-analyze > /dev/null; then
    sed "s|/usr/local/bin/nlpd|$NLPD|" systemd/nlpd.service > "$T/nlpd.service"
    out=$(systemd-analyze verify "$T/nlpd.service" 2>&1)
    if [ -z "$out" ]; then ok "systemd-analyze verify prints nothing"; else nok "systemd-analyze verify" "$out"; fi
else
    echo "skip: systemd-analyze not installed"
fi

if [ ! -f models/lid.176.ftz ]; then
    echo "skip: models/lid.176.ftz missing (make models)"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
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
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
