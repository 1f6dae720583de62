"""A stand-in Confluent Schema Registry for tests/integration/test_registry.sh: the REST subset nlpd uses, in memory,
on a loopback port.
  python3 registry_stub.py PORT LOG [--auth USER:PASS] [--seed ID:FILE]...
PORT 0 picks a free one; the port is printed as the first line of stdout. LOG gets one line per request
("METHOD PATH STATUS"). --seed registers FILE's schema as ID under no subject (a producer's writer schema).
  GET  /subjects                      the subjects
  GET  /schemas/ids/{id}              {"schema": "..."} or 404 (error_code 40403)
  POST /subjects/{subject}/versions   {"schema": "..."} -> {"id": N} (the same schema keeps its id)
  POST /subjects/{subject}            {"schema": "..."} -> {"subject", "id", "version", "schema"}, or 404 (40401 no
                                      subject, 40403 schema not under it)
"""
import base64, json, sys, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path = int(sys.argv[1]), sys.argv[2]
auth = None
schemas = {}   # id -> schema text
subjects = {}  # subject -> [id, ...] (versions in order)
args = sys.argv[3:]
while args:
    if args[0] == "--auth":
        auth = "Basic " + base64.b64encode(args[1].encode()).decode()
    elif args[0] == "--seed":
        i, path = args[1].split(":", 1)
        schemas[int(i)] = open(path).read()
    args = args[2:]
lock = threading.Lock()
log = open(log_path, "a", buffering=1)


def canon(text):
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


class H(BaseHTTPRequestHandler):
    def answer(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log.write("%s %s %d\n" % (self.command, self.path, status))

    def authorised(self):
        if auth and self.headers.get("Authorization") != auth:
            self.answer(401, {"error_code": 40101, "message": "Unauthorized"})
            return False
        return True

    def do_GET(self):
        if not self.authorised():
            return
        parts = self.path.strip("/").split("/")
        with lock:
            if parts == ["subjects"]:
                return self.answer(200, sorted(subjects))
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and parts[2].isdigit():
                s = schemas.get(int(parts[2]))
                if s is None:
                    return self.answer(404, {"error_code": 40403, "message": "Schema %s not found" % parts[2]})
                return self.answer(200, {"schema": s})
        self.answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def do_POST(self):
        if not self.authorised():
            return
        n = int(self.headers.get("Content-Length") or 0)
        try:
            text = json.loads(self.rfile.read(n))["schema"]
            c = canon(text)
        except Exception as e:
            return self.answer(422, {"error_code": 42201, "message": "Invalid schema: %s" % e})
        parts = [urllib.parse.unquote(p) for p in self.path.strip("/").split("/")]
        with lock:
            same = [i for i, s in schemas.items() if canon(s) == c]
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                i = same[0] if same else max([99] + list(schemas)) + 1
                schemas[i] = text
                versions = subjects.setdefault(parts[1], [])
                if i not in versions:
                    versions.append(i)
                return self.answer(200, {"id": i})
            if len(parts) == 2 and parts[0] == "subjects":
                if parts[1] not in subjects:
                    return self.answer(404, {"error_code": 40401, "message": "Subject '%s' not found." % parts[1]})
                for v, i in enumerate(subjects[parts[1]]):
                    if i in same:
                        return self.answer(200, {"subject": parts[1], "id": i, "version": v + 1,
                                                 "schema": schemas[i]})
                return self.answer(404, {"error_code": 40403, "message": "Schema not found"})
        self.answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    def log_message(self, *a):
        pass


ThreadingHTTPServer.allow_reuse_address = True
srv = ThreadingHTTPServer(("127.0.0.1", port), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
