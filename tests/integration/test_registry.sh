#!/bin/bash
# Schema Registry (input/output.schema_registry) against a stand-in registry on loopback
# (tests/integration/registry_stub.py) and a librdkafka mock cluster (build/tests/tool_kafka), with `nlpd run`:
# Confluent-framed Avro input whose writer schemas evolve (an old writer without a field the reader has with a
# default, a newer writer with reordered and extra fields), decoded through Avro schema resolution; the output schema
# registered under <output_topic>-value and the records framed with that id; an unknown id and an unreadable writer
# schema dead-lettered; no input.schema (writer schemas as they are); the
# registry down at start (clear errors) and after start (cached ids keep working, a new id is dead-lettered with a
# reason that says so, and `nlpd replay` brings it back once the registry is up); basic auth from a file.
# Usage: tests/integration/test_registry.sh [NLPD_BINARY] (default build/nlpd). Prints `ok - name` / `not ok - name:
# why`, then `N passed, N failed`; exit 1 on any failure. Every wait is bounded (about a minute in all).
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
NLPD=${1:-build/nlpd}
case $NLPD in /*) ;; *) NLPD=$ROOT/$NLPD ;; esac
TOOL=$ROOT/build/tests/tool_kafka
STUB=$ROOT/tests/integration/registry_stub.py

. tests/lib.sh
NOK_MAX=2000
[ -x "$NLPD" ] || { nok "binary" "$NLPD not found (run make)"; finish; }
[ -x "$TOOL" ] || { nok "tool_kafka" "$TOOL not found (run make)"; finish; }
[ -f models/lid.176.ftz ] || { nok "models" "models/lid.176.ftz missing (run make models)"; finish; }
PY=/usr/bin/python3
"$PY" -c 'import avro.io, avro.schema' 2> /dev/null || { nok "python3-avro" "missing (apt-get install python3-avro)"; finish; }

T=$(mktemp -d) || exit 2
PIDS=()
MOCK_FD=
cleanup() {
    local p
    [ -n "$MOCK_FD" ] && exec {MOCK_FD}>&- 2> /dev/null
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null; done
    sleep 0.2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null; done
    wait 2> /dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

mkfifo "$T/mock.ctl" || exit 2
"$TOOL" mock 4 in out dlq in2 out2 dlq2 < "$T/mock.ctl" > "$T/mock.boot" 2> "$T/mock.err" &
PIDS+=("$!")
exec {MOCK_FD}> "$T/mock.ctl"
BOOT=
for _ in $(seq 100); do
    BOOT=$(head -n 1 "$T/mock.boot" 2> /dev/null)
    [ -n "$BOOT" ] && break
    sleep 0.1
done
[ -n "$BOOT" ] || { nok "mock" "did not start: $(cat "$T/mock.err")"; finish; }
produce() { timeout 60 "$TOOL" produce "$BOOT" "$@"; }
consume() { timeout 90 "$TOOL" consume "$BOOT" "$@"; } # TOPIC COUNT|all TIMEOUT_MS [--avro-out DIR]

# The reader schema (what nlpd reads into) and three writer schemas: w1 is older (no channel: the reader's default
# "web" fills it), w2 and w3 are newer (fields reordered, an extra field the reader skips).
cat > "$T/reader.avsc" << 'EOF'
{"type": "record", "name": "Event", "namespace": "test", "fields": [
  {"name": "id", "type": "string"}, {"name": "text", "type": "string"},
  {"name": "channel", "type": "string", "default": "web"}]}
EOF
cat > "$T/w1.avsc" << 'EOF'
{"type": "record", "name": "Event", "namespace": "test", "fields": [
  {"name": "id", "type": "string"}, {"name": "text", "type": "string"}]}
EOF
cat > "$T/w2.avsc" << 'EOF'
{"type": "record", "name": "Event", "namespace": "test", "fields": [
  {"name": "extra", "type": "long"}, {"name": "text", "type": "string"}, {"name": "id", "type": "string"},
  {"name": "channel", "type": "string"}]}
EOF
sed 's/"extra"/"extra3"/' "$T/w2.avsc" > "$T/w3.avsc"
# w4 lacks "text", which the reader has without a default: not readable with the reader schema.
cat > "$T/w4.avsc" << 'EOF'
{"type": "record", "name": "Event", "namespace": "test", "fields": [
  {"name": "id", "type": "string"}, {"name": "channel", "type": "string"}]}
EOF

# gen WRITER ID PREFIX N OUT: N Confluent-framed records (hex lines) of schema WRITER framed with ID.
gen() {
    "$PY" - "$@" << 'PY'
import io, sys
import avro.io, avro.schema
schema = avro.schema.parse(open(sys.argv[1]).read())
sid, prefix, n = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with open(sys.argv[5], "w") as f:
    for i in range(n):
        d = {"id": "%s%d" % (prefix, i), "text": "%s record %d: a plain English sentence about the weather." % (prefix, i),
             "extra": i, "extra3": i, "channel": "%s-ch%d" % (prefix, i)}
        d = {f.name: d[f.name] for f in schema.fields}
        b = io.BytesIO()
        avro.io.DatumWriter(schema).write(d, avro.io.BinaryEncoder(b))
        f.write((b"\0" + sid.to_bytes(4, "big") + b.getvalue()).hex() + "\n")
PY
}

# start_stub PORT [ARGS]: the stand-in registry (writer schemas 1, 2, 3 seeded, basic auth user:secret); sets
# REG_PORT, REG_PID.
start_stub() {
    rm -f "$T/reg.port"
    "$PY" "$STUB" "$1" "$T/reg.log" --auth user:secret --seed "1:$T/w1.avsc" --seed "2:$T/w2.avsc" \
        --seed "3:$T/w3.avsc" --seed "4:$T/w4.avsc" > "$T/reg.port" 2> "$T/reg.err" &
    REG_PID=$!
    PIDS+=("$REG_PID")
    for _ in $(seq 100); do
        REG_PORT=$(head -n 1 "$T/reg.port" 2> /dev/null)
        [ -n "$REG_PORT" ] && return 0
        sleep 0.1
    done
    echo "registry stub did not start: $(cat "$T/reg.err")"
    return 1
}
# A port nothing listens on.
DEAD_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

printf 'user:secret\n' > "$T/auth"
chmod 600 "$T/auth"
# conf NAME INPUT_REGISTRY OUTPUT_REGISTRY: a config with Avro in and out through the given registry groups.
conf() {
    cat > "$T/$1.conf" << EOF
kafka: { brokers = "$BOOT"; group_id = "nlpd-$1"; input_topics = [ "in" ]; output_topic = "out"; dlq_topic = "dlq";
         properties = ( ("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500") ); };
input: { format = "avro"; schema = "$T/reader.avsc"; text_field = "text"; id_field = "channel";
         schema_registry = { $2 }; };
output: { format = "avro"; schema = "schemas/enriched.avsc"; schema_registry = { $3 }; };
flow: { shutdown_timeout_ms = 10000; };
metrics: { listen = ""; };
pipeline = ( { stage = "langid"; model = "models/lid.176.ftz"; } );
EOF
    echo "$T/$1.conf"
}
# run_fail CONF: nlpd run that must exit 1 at start; its stderr in $T/fail.err; returns 0 when it did.
run_fail() {
    timeout 30 "$NLPD" run -c "$1" > /dev/null 2> "$T/fail.err"
    [ $? -eq 1 ]
}

start_stub 0 || { nok "registry stub" "$(cat "$T/reg.err")"; finish; }
URL="http://127.0.0.1:$REG_PORT"

# --- registry down or refusing at start: clear errors, exit 1 --------------------------------------------------------
C=$(conf down "url = \"http://127.0.0.1:$DEAD_PORT\";" "url = \"$URL\"; basic_auth_file = \"$T/auth\";")
if run_fail "$C" && grep -q "schema registry GET http://127.0.0.1:$DEAD_PORT/subjects: .*\(onnect\|refused\)" "$T/fail.err"; then
    ok "input registry down at start: exit 1, says so" "$(grep -o 'schema registry.*' "$T/fail.err" | head -c 160)"
else
    nok "input registry down at start: exit 1, says so" "$(tail -n 3 "$T/fail.err")"
fi
C=$(conf down2 "url = \"$URL\"; basic_auth_file = \"$T/auth\";" "url = \"http://127.0.0.1:$DEAD_PORT\";")
if run_fail "$C" && grep -q "output.schema_registry: schema registry POST http://127.0.0.1:$DEAD_PORT/subjects/out-value/versions" "$T/fail.err"; then
    ok "output registry down at start: exit 1, says so"
else
    nok "output registry down at start: exit 1, says so" "$(tail -n 3 "$T/fail.err")"
fi
C=$(conf noauth "url = \"$URL\"; basic_auth = \"user:wrong\";" "url = \"$URL\"; basic_auth_file = \"$T/auth\";")
if run_fail "$C" && grep -q "HTTP 401: Unauthorized" "$T/fail.err"; then
    ok "wrong credentials: exit 1 with the registry's answer"
else
    nok "wrong credentials: exit 1 with the registry's answer" "$(tail -n 3 "$T/fail.err")"
fi
C=$(conf lookup "url = \"$URL\"; basic_auth_file = \"$T/auth\";" \
    "url = \"$URL\"; basic_auth_file = \"$T/auth\"; subject = \"never-registered\"; auto_register = false;")
if run_fail "$C" && grep -q "POST $URL/subjects/never-registered: HTTP 404: Subject 'never-registered' not found" "$T/fail.err"; then
    ok "auto_register = false and no such subject: exit 1"
else
    nok "auto_register = false and no such subject: exit 1" "$(tail -n 3 "$T/fail.err")"
fi

# --- evolution: writers 1 and 2 resolved into the reader schema; output registered and framed --------------------
gen "$T/w1.avsc" 1 a 40 "$T/a.hex"
gen "$T/w2.avsc" 2 b 40 "$T/b.hex"
gen "$T/w1.avsc" 999 z 1 "$T/z.hex"
gen "$T/w4.avsc" 4 y 1 "$T/y.hex"
cat "$T/a.hex" "$T/b.hex" "$T/z.hex" "$T/y.hex" | produce in --hex > /dev/null || { nok "produce" "input"; finish; }
C=$(conf main "url = \"$URL\"; basic_auth_file = \"$T/auth\";" "url = \"$URL\"; basic_auth_file = \"$T/auth\";")
"$NLPD" run -c "$C" > /dev/null 2> "$T/run.log" &
NPID=$!
PIDS+=("$NPID")
consume out 80 60000 > /dev/null 2>&1
consume dlq 2 30000 > "$T/dlq1.recs" 2> /dev/null
mkdir -p "$T/bin"
consume out all 20000 --avro-out "$T/bin" > "$T/out.recs" 2> /dev/null
# check_out N_EXPECTED: every output decodes with the schema the registry has under its framing id, which is the id
# registered under out-value; texts and ids (here: the channel, the reader's default for w1) as written.
check_out() {
    "$PY" - "$T/out.recs" "$T/bin" "$URL" "$1" << 'PY'
import base64, io, json, re, sys, urllib.request
import avro.io, avro.schema
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
url, want = sys.argv[3], int(sys.argv[4])
def get(path, body=None):
    rq = urllib.request.Request(url + path, data=body, headers={"Authorization": "Basic " + base64.b64encode(b"user:secret").decode(),
                                                                "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(rq, timeout=10))
import os
saved = os.path.join(sys.argv[2], "..", "sid.json")  # kept from the first call: the registry may be down later
if not os.path.exists(saved):
    enriched = open("schemas/enriched.avsc").read()
    sid = get("/subjects/out-value", json.dumps({"schema": enriched}).encode())["id"]
    json.dump({"id": sid, "schema": get("/schemas/ids/%d" % sid)["schema"]}, open(saved, "w"))
sid, text = json.load(open(saved))["id"], json.load(open(saved))["schema"]
schema = avro.schema.parse(text)
probs, seen = [], {}
for r in recs:
    raw = open(sys.argv[2] + "/" + r["file"], "rb").read()
    if raw[0] != 0 or int.from_bytes(raw[1:5], "big") != sid:
        probs.append("framing %s, not id %d" % (raw[:5].hex(), sid)); continue
    d = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(raw[5:])))
    m = re.match(r"(\w)(\d+)? record (\d+):", d["text"])
    if not m:
        probs.append("text %r" % d["text"]); continue
    p, i = m.group(1), m.group(3)
    expect = "web" if p in "ac" else "%s-ch%s" % (p, i)  # a, c: writer 1 (no channel: the default)
    if d["id"] != expect:
        probs.append("%s%s: id (channel) %r, not %r" % (p, i, d["id"], expect))
    if not (d.get("lang") or {}).get("code"):
        probs.append("%s%s: no lang" % (p, i))
    seen[p + i] = seen.get(p + i, 0) + 1
dup = [k for k, n in seen.items() if n > 1]
if len(seen) != want or dup:
    probs.append("%d distinct records (want %d), doubled: %s" % (len(seen), want, dup[:5]))
print("; ".join(probs[:5]) if probs else "%d records, framed with id %d (out-value)" % (len(seen), sid))
sys.exit(1 if probs else 0)
PY
}
if why=$(check_out 80 2>&1); then
    ok "evolved writer schemas (ids 1, 2) resolved into the reader; output registered and framed" "$why"
else
    nok "evolved writer schemas (ids 1, 2) resolved into the reader; output registered and framed" "$why $(tail -n 3 "$T/run.log")"
fi
if grep -q '"nlpd.error":"schema id 999: schema registry GET .*/schemas/ids/999: HTTP 404: Schema 999 not found"' "$T/dlq1.recs"; then
    ok "an id the registry does not know: dead letter with the reason"
else
    nok "an id the registry does not know: dead letter with the reason" "$(head -c 400 "$T/dlq1.recs")"
fi
if grep -q 'schema id 4: writer schema id 4 cannot be read with input.schema (Avro schema resolution: the reader.s field ."text." has no default and the writer schema lacks it)' "$T/dlq1.recs"; then
    ok "a writer schema the reader cannot read: dead letter with the reason"
else
    nok "a writer schema the reader cannot read: dead letter with the reason" "$(grep -o "schema id 4[^}]*" "$T/dlq1.recs")"
fi
n1=$(grep -c '^GET /schemas/ids/1 200' "$T/reg.log")
n2=$(grep -c '^GET /schemas/ids/2 200' "$T/reg.log")
if [ "$n1" -eq 1 ] && [ "$n2" -eq 1 ]; then
    ok "each writer schema fetched once (cached)"
else
    nok "each writer schema fetched once (cached)" "id 1: $n1 requests, id 2: $n2"
fi

# --- registry down after start: cached ids go on, a new id is dead-lettered, then replayed --------------------------
kill -TERM "$REG_PID"
wait "$REG_PID" 2> /dev/null
# A reload while the registry is down keeps the ids this process got (the output's, the writers').
kill -HUP "$NPID"
for _ in $(seq 100); do
    grep -q 'reload: applied\|reload: .*still running' "$T/run.log" && break
    sleep 0.1
done
if grep -q 'reload: applied' "$T/run.log" && grep -q 'using schema id 100, which it gave for subject out-value before' "$T/run.log"; then
    ok "SIGHUP reload while the registry is down: applied with the cached output id"
else
    nok "SIGHUP reload while the registry is down: applied with the cached output id" "$(grep reload "$T/run.log" | tail -n 3)"
fi
gen "$T/w1.avsc" 1 c 10 "$T/c.hex"
gen "$T/w3.avsc" 3 d 10 "$T/d.hex"
cat "$T/c.hex" "$T/d.hex" | produce in --hex > /dev/null
consume out 90 60000 > /dev/null 2>&1
consume dlq 12 60000 > "$T/dlq2.recs" 2> /dev/null
nd=$(grep -c '"nlpd.error":"schema id 3: schema registry GET .*(registry unreachable: replay this record when it is back)' "$T/dlq2.recs")
consume out all 20000 --avro-out "$T/bin" > "$T/out.recs" 2> /dev/null
if [ "$nd" -eq 10 ] && why=$(check_out 90 2>&1); then
    ok "registry down after start: cached ids decoded, a new id dead-lettered as unreachable" "$why; $nd dead letters"
else
    nok "registry down after start: cached ids decoded, a new id dead-lettered as unreachable" \
        "$nd dead letters: ${why:-} $(head -c 300 "$T/dlq2.recs")"
fi
start_stub "$REG_PORT" || nok "registry stub restart" "$(cat "$T/reg.err")"
timeout 60 "$NLPD" replay -c "$C" --reason unreachable > "$T/replay.out" 2> "$T/replay.err"
rc=$?
consume out 100 60000 > /dev/null 2>&1
consume out all 20000 --avro-out "$T/bin" > "$T/out.recs" 2> /dev/null
if [ $rc -eq 0 ] && grep -q 'matched 10, produced 10' "$T/replay.out" && why=$(check_out 100 2>&1); then
    ok "registry back: nlpd replay --reason unreachable, every record enriched once" "$why"
else
    nok "registry back: nlpd replay --reason unreachable, every record enriched once" \
        "replay exit $rc: $(cat "$T/replay.out" "$T/replay.err" | head -c 300); ${why:-}"
fi
kill -TERM "$NPID"
if wait "$NPID"; then
    ok "nlpd run exits 0 at SIGTERM"
else
    nok "nlpd run exits 0 at SIGTERM" "$(tail -n 3 "$T/run.log")"
fi

# --- no input.schema: each record read with its own writer schema; an unframed record is a dead letter ----------
gen "$T/w2.avsc" 2 e 5 "$T/e.hex"
{ cat "$T/e.hex"; printf 'plain text, no framing' | od -An -tx1 | tr -d ' \n'; echo; } | produce in2 --hex > /dev/null
cat > "$T/nr.conf" << EOF
kafka: { brokers = "$BOOT"; group_id = "nlpd-nr"; input_topics = [ "in2" ]; output_topic = "out2"; dlq_topic = "dlq2";
         properties = ( ("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500") ); };
input: { format = "avro"; text_field = "text"; id_field = "id";
         schema_registry = { url = "$URL"; basic_auth_file = "$T/auth"; }; };
metrics: { listen = ""; };
pipeline = ( { stage = "langid"; model = "models/lid.176.ftz"; } );
EOF
"$NLPD" run -c "$T/nr.conf" > /dev/null 2> "$T/nr.log" &
NPID=$!
PIDS+=("$NPID")
consume out2 5 60000 > /dev/null 2>&1
consume dlq2 1 30000 > "$T/nr.dlq" 2> /dev/null
kill -TERM "$NPID"
wait "$NPID"
rc=$?
ids=$(consume out2 all 10000 2> /dev/null | "$PY" -c 'import json,sys; print(" ".join(sorted(json.loads(json.loads(l)["value"])["id"] for l in sys.stdin)))')
if [ $rc -eq 0 ] && [ "$ids" = "e0 e1 e2 e3 e4" ] && grep -q 'without the Confluent framing' "$T/nr.dlq"; then
    ok "without input.schema: records read with their writer schema; unframed ones dead-lettered" "$ids"
else
    nok "without input.schema: records read with their writer schema; unframed ones dead-lettered" \
        "exit $rc, ids '$ids': $(head -c 300 "$T/nr.dlq") $(tail -n 3 "$T/nr.log")"
fi
finish
