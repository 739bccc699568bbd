"""Measures Python runtime servers side by side, in one run, interleaved so that the noise of a
shared machine falls on all of them alike:

* fresh start: process spawn → "listening" line → specialize answered → first response, with
  no pause (what a cold start without a warm pool costs);
* running instance: on an instance that has been listening for a while, the specialize
  request and the first call after it (a cold start served from the warm pool);
* warm calls: sequential requests on one keep-alive connection, GET of a hello function and a
  16 KiB POST the function reads; p50/p99/mean.

    python3 environments/python/bench/bench.py \\
        --server before=git:4724f52 --server after=environments/python/server.py \\
        [--server waitress=waitress] [--rounds 15] [--calls 2000]

A server is LABEL=SPEC, SPEC being a server.py path, git:REV (that revision's
environments/python/server.py, run beside the current vendor/), or `waitress`
(bench/waitress_server.py; needs WAITRESS_PATH, see there). Each is launched the way the
executor does: `/usr/bin/python3 -I -S <file>`, clean environment, on PORT.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PYDIR))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

HELLO = "def main():\n    return 'Hello, world!\\n'\n"
ECHO_LEN = "from flask import request\n\ndef main():\n    return str(len(request.get_data()))\n"


class Conn:
    """A minimal HTTP/1.1 client on one keep-alive connection (cheap, so that the server's cost
    dominates what is measured)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def request(self, method, path, body=b"", headers=()):
        head = "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n".format(method, path)
        for name, value in headers:
            head += "{}: {}\r\n".format(name, value)
        if body or method == "POST":
            head += "Content-Length: {}\r\n".format(len(body))
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            n = int(fields["content-length"])
            while len(self.buf) < n:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n:]
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                data += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        else:
            raise ValueError("response without a length: {}".format(lines))
        return status, data


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve(spec, scratch):
    """The server file for a SPEC (see the module doc)."""
    if spec == "waitress":
        if not os.environ.get("WAITRESS_PATH"):
            sys.exit("Error: the waitress server needs WAITRESS_PATH (see bench/waitress_server.py)")
        return os.path.join(HERE, "waitress_server.py")
    if spec.startswith("git:"):
        rev = spec[4:]
        try:
            src = subprocess.run(
                ["git", "-C", REPO, "show", "{}:environments/python/server.py".format(rev)],
                check=True,
                capture_output=True,
            ).stdout
        except subprocess.CalledProcessError as exc:
            sys.exit("Error: git show {}: {}".format(rev, exc.stderr.decode().strip()))
        d = tempfile.mkdtemp(prefix="rev-", dir=scratch)
        with open(os.path.join(d, "server.py"), "wb") as f:
            f.write(src)
        os.symlink(os.path.join(PYDIR, "vendor"), os.path.join(d, "vendor"))
        return os.path.join(d, "server.py")
    path = os.path.abspath(spec)
    if not os.path.isfile(path):
        sys.exit("Error: no server file {}".format(path))
    return path


class Instance:
    def __init__(self, server_file, home):
        self.port = free_port()
        self.home = home
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "PORT": str(self.port)}
        if os.environ.get("WAITRESS_PATH"):
            env["WAITRESS_PATH"] = os.environ["WAITRESS_PATH"]
        self.spawned = time.perf_counter()
        self.proc = subprocess.Popen(
            [PYTHON, "-I", "-S", server_file],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for line in self.proc.stdout:
            if b"listening on" in line:
                break
        else:
            raise RuntimeError("{} exited before listening".format(server_file))
        self.listening = time.perf_counter()

    def specialize(self, conn, code):
        path = os.path.join(self.home, "fn.py")
        with open(path, "w") as f:
            f.write(code)
        req = {"filepath": path, "functionName": "", "url": "", "FunctionMetadata": {"name": "b"}, "envVersion": 3}
        status, body = conn.request(
            "POST", "/v2/specialize", json.dumps(req).encode(), [("Content-Type", "application/json")]
        )
        if status != 200:
            raise RuntimeError("specialize: {} {!r}".format(status, body))

    def cpu_ns(self):
        """CPU time the process's live threads have used so far (robust to a loaded machine,
        unlike wall time)."""
        total = 0
        task_dir = "/proc/{}/task".format(self.proc.pid)
        for tid in os.listdir(task_dir):
            try:
                with open(os.path.join(task_dir, tid, "schedstat")) as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass  # the thread ended meanwhile
        return total

    def stop(self):
        """Kills the process; its total CPU time (user + system), in ms."""
        self.proc.kill()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = -9
        self.proc.stdout.close()
        return (usage.ru_utime + usage.ru_stime) * 1000.0


def ms(seconds):
    return seconds * 1000.0


def cold_round(server_file, scratch, pause):
    home = tempfile.mkdtemp(dir=scratch)
    inst = Instance(server_file, home)
    try:
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        conn = Conn(inst.port)
        inst.specialize(conn, HELLO)
        t1 = time.perf_counter()
        status, body = conn.request("GET", "/")
        t2 = time.perf_counter()
        if (status, body) != (200, b"Hello, world!\n"):
            raise RuntimeError("first call: {} {!r}".format(status, body))
        conn.close()
        cpu = inst.stop()
        return {
            "process_cpu": cpu,
            "spawn_to_listening": ms(inst.listening - inst.spawned),
            "specialize": ms(t1 - t0),
            "first_call": ms(t2 - t1),
            "specialize_to_first_response": ms(t2 - t0),
            "spawn_to_first_response": ms(t2 - inst.spawned),
        }
    finally:
        if inst.proc.returncode is None:
            inst.stop()


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def summary(values):
    return {
        "p50": statistics.median(values),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values),
        "n": len(values),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="append", default=[], metavar="LABEL=SPEC")
    ap.add_argument("--rounds", type=int, default=15, help="process starts per server and kind")
    ap.add_argument("--calls", type=int, default=2000, help="warm calls per server and kind")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    specs = args.server or ["current=" + os.path.join(PYDIR, "server.py")]
    scratch = tempfile.mkdtemp(prefix="pybench-")
    try:
        servers = []
        for s in specs:
            label, sep, spec = s.partition("=")
            if not sep or not label:
                sys.exit("Error: --server wants LABEL=SPEC, got {!r}".format(s))
            servers.append((label, resolve(spec, scratch)))
        results = {
            label: {"fresh": [], "running": [], "get": [], "post16k": [], "get_cpu": [], "post16k_cpu": []}
            for label, _ in servers
        }

        for _ in range(args.rounds):
            for label, path in servers:
                results[label]["fresh"].append(cold_round(path, scratch, 0))
                results[label]["running"].append(cold_round(path, scratch, 0.3))

        instances = {}
        try:
            for label, path in servers:
                home = tempfile.mkdtemp(dir=scratch)
                get_inst = Instance(path, home)
                conn = Conn(get_inst.port)
                get_inst.specialize(conn, HELLO)
                home = tempfile.mkdtemp(dir=scratch)
                post_inst = Instance(path, home)
                pconn = Conn(post_inst.port)
                post_inst.specialize(pconn, ECHO_LEN)
                instances[label] = (get_inst, conn, post_inst, pconn)
                for _ in range(200):  # warm-up
                    conn.request("GET", "/")
                    pconn.request("POST", "/", b"x" * 16384)
            body = b"x" * 16384
            blocks = 10
            for _ in range(blocks):  # interleaved blocks
                for label, _ in servers:
                    get_inst, conn, post_inst, pconn = instances[label]
                    n = args.calls // blocks
                    out = results[label]["get"]
                    cpu = get_inst.cpu_ns()
                    for _ in range(n):
                        t = time.perf_counter()
                        status, data = conn.request("GET", "/")
                        out.append(ms(time.perf_counter() - t))
                        assert status == 200 and data == b"Hello, world!\n", (status, data)
                    results[label]["get_cpu"].append((get_inst.cpu_ns() - cpu) / n / 1e6)
                    out = results[label]["post16k"]
                    cpu = post_inst.cpu_ns()
                    for _ in range(n):
                        t = time.perf_counter()
                        status, data = pconn.request("POST", "/", body)
                        out.append(ms(time.perf_counter() - t))
                        assert status == 200 and data == b"16384", (status, data)
                    results[label]["post16k_cpu"].append((post_inst.cpu_ns() - cpu) / n / 1e6)
        finally:
            for get_inst, conn, post_inst, pconn in instances.values():
                conn.close()
                pconn.close()
                get_inst.stop()
                post_inst.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    report = {}
    for label, _ in servers:
        r = results[label]
        report[label] = {
            "fresh": {k: summary([x[k] for x in r["fresh"]]) for k in r["fresh"][0]},
            "running": {k: summary([x[k] for x in r["running"]]) for k in ("specialize", "first_call", "specialize_to_first_response")},
            "warm_get": summary(r["get"]),
            "warm_post16k": summary(r["post16k"]),
            "warm_get_server_cpu_per_call": statistics.median(r["get_cpu"]),
            "warm_post16k_server_cpu_per_call": statistics.median(r["post16k_cpu"]),
        }
    print("python {}; {} rounds, {} warm calls each; ms".format(sys.version.split()[0], args.rounds, args.calls))
    rows = [
        ("fresh: process CPU, spawn → killed (p50)", lambda x: x["fresh"]["process_cpu"]["p50"]),
        ("fresh: spawn → listening (p50)", lambda x: x["fresh"]["spawn_to_listening"]["p50"]),
        ("fresh: spawn → first response (p50)", lambda x: x["fresh"]["spawn_to_first_response"]["p50"]),
        ("running: specialize (p50)", lambda x: x["running"]["specialize"]["p50"]),
        ("running: first call (p50)", lambda x: x["running"]["first_call"]["p50"]),
        ("running: specialize → first response (p50)", lambda x: x["running"]["specialize_to_first_response"]["p50"]),
        ("warm GET hello p50", lambda x: x["warm_get"]["p50"]),
        ("warm GET hello p99", lambda x: x["warm_get"]["p99"]),
        ("warm GET hello mean", lambda x: x["warm_get"]["mean"]),
        ("warm POST 16 KiB p50", lambda x: x["warm_post16k"]["p50"]),
        ("warm POST 16 KiB p99", lambda x: x["warm_post16k"]["p99"]),
        ("warm GET hello: server CPU per call", lambda x: x["warm_get_server_cpu_per_call"]),
        ("warm POST 16 KiB: server CPU per call", lambda x: x["warm_post16k_server_cpu_per_call"]),
    ]
    labels = [label for label, _ in servers]
    print("{:<44}".format("") + "".join("{:>12}".format(l) for l in labels))
    for name, get in rows:
        print("{:<44}".format(name) + "".join("{:>12.3f}".format(get(report[l])) for l in labels))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
