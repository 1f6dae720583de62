"""The limits of nlpd's metrics server, driven over loopback with raw sockets (used by test_metrics.sh).

usage: http_limits.py limits PORT PID CAP IDLE_MS REQUEST_MS
       http_limits.py emfile PORT PID LOG FDS
Prints `ok - ...` / `not ok - ...` lines. Every socket has a timeout; every wait is bounded.
"""
import re
import os
import socket
import sys
import time

HEAD_MAX = 8192  # NLPD_HTTP_MAX_HEAD
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def say(good, what, why=""):
    print(("ok - " if good else "not ok - ") + what + ("" if good else ": " + why), flush=True)


def conn(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_reply(s, limit=1 << 20):
    """Everything until EOF or a complete answer (Content-Length), or what came before a timeout/reset."""
    data = b""
    try:
        while len(data) < limit:
            b = s.recv(65536)
            if not b:
                break
            data += b
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for ln in head.split(b"\r\n")[1:]:
                    k, _, v = ln.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v):
                        return data
    except (socket.timeout, ConnectionError):
        pass
    return data


def status(data):
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and data.startswith(b"HTTP/1.") and parts[1].isdigit() else None


def get(port, path="/live"):
    try:
        s = conn(port)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        code = status(read_reply(s))
        s.close()
        return code
    except OSError as e:
        return "%s" % e


def rss(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE


def closed_by_peer(s, deadline):
    """True when the peer closes s (EOF or reset) before deadline (monotonic seconds)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionError:
            return True


def limits(port, pid, cap, idle_ms, request_ms):
    idle, request = idle_ms / 1000, request_ms / 1000

    # A head over the limit is answered 431 and closed; a head just under it is served.
    s = conn(port)
    s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * HEAD_MAX) + b"\r\n\r\n")
    c1 = status(read_reply(s))
    s.close()
    s = conn(port)
    s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: " + b"a" * (HEAD_MAX - 100) + b"\r\n\r\n")
    c2 = status(read_reply(s))
    s.close()
    say(c1 == 431 and c2 == 200, "a request head over 8 KiB: 431; one under it: 200", "got %s and %s" % (c1, c2))

    # 32 MiB of header lines: the server stops reading at the limit, so its memory does not follow. What one
    # connection may hold is one head (8 KiB) plus a read chunk; 8 MiB leaves room for allocator noise and
    # stays far below the 32 MiB a server buffering the head would add.
    before = rss(pid)
    s = conn(port)
    sent = 0
    try:
        s.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
        chunk = line * 64
        while sent < 32 << 20:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    time.sleep(0.3)
    grew = rss(pid) - before  # while the connection is still open on this side
    s.close()
    say(grew < 8 << 20 and sent < 32 << 20, "32 MiB of headers: refused early, RSS +%.1f MiB" % (grew / 2**20),
        "server took %d bytes, RSS grew %d bytes" % (sent, grew))

    # POST with a 1 GiB body announced: 405 at once, the body is not read (the connection closes after at most
    # a small lingering read, so pushing the rest fails long before 1 GiB).
    before = rss(pid)
    s = conn(port)
    t0 = time.monotonic()
    s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n" + b"x" * 4096)
    reply = read_reply(s)
    dt = time.monotonic() - t0
    pushed = 0
    try:
        s.settimeout(5)
        while pushed < 256 << 20:
            s.sendall(b"x" * 65536)
            pushed += 65536
    except OSError:
        pass
    s.close()
    grew = rss(pid) - before
    say(status(reply) == 405 and b"Allow: GET, HEAD" in reply and pushed < 256 << 20 and grew < 8 << 20,
        "POST with a 1 GiB body: 405 in %.2f s, connection closed after %d more body bytes" % (dt, pushed),
        "status %s, %d body bytes taken, RSS +%d" % (status(reply), pushed, grew))

    # Idle connections are closed after idle_timeout_ms; a head dripping in is cut at request_timeout_ms.
    held = [conn(port) for _ in range(min(5, cap - 1))]
    drip = conn(port)
    t0 = time.monotonic()
    drip.sendall(b"GET /live HTTP/1.1\r\n")
    cut = None
    while time.monotonic() - t0 < request + 2:
        try:
            drip.sendall(b"X: y\r\n")
        except OSError:
            cut = time.monotonic() - t0
            break
        if closed_by_peer(drip, time.monotonic() + 0.1):
            cut = time.monotonic() - t0
            break
    drip.close()
    # The deadlines run on the event loop's timers: closed at the deadline, plus one loop turn; 1 s of slack.
    say(cut is not None and request - 0.05 <= cut <= request + 1,
        "a head sent a line at a time is cut at the request timeout (%.2f s)" % (cut or -1), "cut after %s" % cut)
    deadline = t0 + idle + 1
    closed = sum(closed_by_peer(s, deadline) for s in held)
    for s in held:
        s.close()
    say(closed == len(held), "%d idle connections closed after the idle timeout" % len(held),
        "%d of %d closed" % (closed, len(held)))

    # The connection cap: `cap` open connections, then the next one is refused (503, closed) while those are open;
    # once they close, /live answers again.
    held = [conn(port) for _ in range(cap)]
    time.sleep(0.2)
    extra = conn(port)
    r = read_reply(extra)
    extra.close()
    for s in held:
        s.close()
    time.sleep(0.2)
    after = get(port)
    say(status(r) == 503 and after == 200,
        "connection %d over the cap of %d: 503 and closed; /live answers after" % (cap + 1, cap),
        "extra got %r, /live after: %s" % (r[:40], after))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def emfile(port, pid, log, fds):
    """nlpd runs under `ulimit -n FDS`: connections beyond its descriptors wait in the backlog and accept()
    fails with EMFILE. The loop must back off (little CPU, few log lines) and accept again once fds free up."""
    idle0 = cpu_seconds(pid)
    time.sleep(2)
    idle = cpu_seconds(pid) - idle0  # the daemon's own idle cost (its 50 ms tick, librdkafka's threads)
    held = []
    try:
        for _ in range(fds + 20):
            held.append(conn(port))
    except OSError as e:
        say(False, "open connections", "%s after %d" % (e, len(held)))
        return
    time.sleep(0.5)
    used = len(os.listdir("/proc/%d/fd" % pid))
    say(used >= fds - 1, "nlpd is at its descriptor limit (%d of %d open)" % (used, fds), "%d of %d open" % (used, fds))
    size0, cpu0, t0 = os.path.getsize(log), cpu_seconds(pid), time.monotonic()
    time.sleep(2)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    with open(log, "rb") as f:
        f.seek(size0)
        lines = f.read().count(b"\n")
    # A spinning accept loop takes all the CPU it gets. Backed off, the loop retries accept() at most every 50 ms
    # (at most 40 tries of microseconds each in 2 s), so the CPU time stays the idle daemon's; 0.25 s on top of
    # it is far above 40 tries plus clock-tick rounding. Lines: one rate-limited warning per 10 s, a few others.
    say(cpu <= idle + 0.25,
        "at the descriptor limit the loop does not spin (%.2f s CPU in %.1f s, idle: %.2f s)" % (cpu, wall, idle),
        "%.2f s CPU in %.1f s, idle %.2f s" % (cpu, wall, idle))
    say(lines <= 10, "at the descriptor limit stderr is not flooded (%d lines in %.1f s)" % (lines, wall),
        "%d lines" % lines)
    with open(log, "rb") as f:
        # nlpd's lines: "<N>nlpd[...]" after an optional ISO 8601 timestamp, or the embedded broker's address alone
        foreign = [ln for ln in f.read().splitlines()
                   if ln and not re.match(rb"^(\d{4}-\d\d-\d\dT[\d:.]+Z )?<\d>|^[\d.]+:\d+$", ln)]
    say(not foreign, "every stderr line is nlpd's own, libevent's included", "e.g. %r" % foreign[:1])
    for s in held:
        s.close()
    # the back-off is at most 1 s; accepted connections are then served
    ok = None
    for _ in range(30):
        ok = get(port)
        if ok == 200:
            break
        time.sleep(0.1)
    say(ok == 200, "after the descriptors are free again /live answers", "got %s" % ok)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "limits":
        limits(*map(int, sys.argv[2:7]))
    else:
        emfile(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
