"""Tests for the Python runtime: each test launches the real server.py the way
the executor does (``/usr/bin/python3 -I -S server.py``), specializes it with
fixture functions written to a temp dir, and talks HTTP to it."""

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(os.path.dirname(HERE), "server.py")
ZYGOTE = os.path.join(os.path.dirname(HERE), "zygote.py")
RUNTIME_PYTHON = os.environ.get("RUNTIME_PYTHON") or (
    "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url_base, method="GET", path="/", body=None, headers=None, timeout=10):
    host, port = url_base
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        return res.status, dict((k.lower(), v) for k, v in res.getheaders()), res.read()
    finally:
        conn.close()


class Server:
    def __init__(self, proc, addr, log_path):
        self.proc = proc
        self.addr = addr
        self.log_path = log_path

    def logs(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def call(self, method="GET", path="/", body=None, headers=None):
        return call(self.addr, method, path, body, headers)

    def specialize(self, filepath, function_name=""):
        load_req = {
            "filepath": filepath,
            "functionName": function_name,
            "url": "",
            "FunctionMetadata": {"name": "fn", "namespace": "default"},
            "envVersion": 3,
        }
        return self.call("POST", "/v2/specialize", json.dumps(load_req), {"Content-Type": "application/json"})

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("server exited {}:\n{}".format(self.proc.returncode, self.logs()))
            try:
                if call(self.addr, path="/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server not ready:\n" + self.logs())
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


class Zygote:
    """zygote.py without a sandbox: it forks instances that get only their descriptors and
    environment (the executor adds a slot's namespaces, cgroups and seccomp programs)."""

    def __init__(self):
        import json as _json

        self._json = _json
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [RUNTIME_PYTHON, "-I", "-S", ZYGOTE],
            env={"PATH": "/usr/bin:/bin", "FISSION_ZYGOTE_FD": str(theirs.fileno())},
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self.sock = ours
        self.exits = {}
        self.next_id = 0
        assert "ready" in self._recv(timeout=30)

    def _recv(self, timeout=None):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("the zygote exited")
        return self._json.loads(data)

    def pump(self):
        """Takes in the exit reports sent so far."""
        while True:
            try:
                msg = self._recv(timeout=0)
            except (BlockingIOError, socket.timeout):
                return
            if "exit" in msg:
                self.exits[msg["exit"]] = msg

    def spawn(self, env, args, listen, log_fd):
        self.next_id += 1
        req = {"op": "spawn", "id": self.next_id, "env": list(env.items()), "args": list(args), "cwd": "/tmp"}
        req["fds"] = ["listen", "stdout", "stderr"]
        socket.send_fds(self.sock, [self._json.dumps(req).encode()], [listen, log_fd, log_fd])
        while True:
            msg = self._recv(timeout=10)
            if "exit" in msg:
                self.exits[msg["exit"]] = msg
            elif msg.get("id") == self.next_id:
                assert "pid" in msg, msg
                return msg["pid"]

    def close(self):
        self.sock.close()
        self.proc.wait(10)


class ZygoteChild:
    """The Popen methods Server uses, for a child of the zygote."""

    def __init__(self, zygote, pid):
        self.zygote = zygote
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            self.zygote.pump()
            msg = self.zygote.exits.get(self.pid)
            if msg is not None:
                self.returncode = -msg["signal"] if "signal" in msg else msg["code"]
        return self.returncode

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout or 3600)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("zygote child", timeout)
            time.sleep(0.01)
        return self.returncode

    def terminate(self):
        os.kill(self.pid, 15)

    def kill(self):
        os.kill(self.pid, 9)


@pytest.fixture(scope="session")
def zygote():
    z = Zygote()
    yield z
    z.close()


# Every test that starts a server runs twice: a fresh interpreter per instance (as with
# --python-zygote off) and a child forked from the zygote.
@pytest.fixture(params=["exec", "zygote"])
def start(request, tmp_path):
    servers = []
    forked = request.param == "zygote"

    def _start(env=None, args=(), pass_fds=(), addr=None):
        port = free_port()
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port)}
        full_env.update(env or {})
        log_path = str(tmp_path / "server-{}.log".format(len(servers)))
        if forked:
            if pass_fds:
                pytest.skip("a zygote child always gets its listening socket as fd 3")
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
            full_env["FISSION_LISTEN_FD"] = "3"
            z = request.getfixturevalue("zygote")
            with open(log_path, "wb") as log:
                pid = z.spawn(full_env, args, listener.fileno(), log.fileno())
            listener.close()
            proc = ZygoteChild(z, pid)
        else:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [RUNTIME_PYTHON, "-I", "-S", SERVER, *args],
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=pass_fds,
                )
        server = Server(proc, addr or ("127.0.0.1", port), log_path)
        servers.append(server)
        server.wait_ready()
        return server

    yield _start
    for s in servers:
        s.stop()


def write_files(root, files):
    for rel, content in files.items():
        p = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(textwrap.dedent(content))
    return str(root)


def serve(start, root, files, filepath="", function_name="", env=None):
    """Starts a server and specializes it with the given files."""
    write_files(root, files)
    server = start(env=env)
    status, _, body = server.specialize(os.path.join(str(root), filepath) if filepath else str(root), function_name)
    assert status == 200, body.decode() + "\n" + server.logs()
    assert body == b""
    return server


HELLO = """
def main():
    return "Hello, world!\\n"
"""

# ---------------------------------------------------------------------------
# Invocation
# ---------------------------------------------------------------------------


def test_hello_single_file_returns_str(start, tmp):
    server = serve(start, tmp, {"hello.py": HELLO}, filepath="hello.py")
    status, headers, body = server.call()
    assert status == 200
    assert body == b"Hello, world!\n"
    assert headers["content-type"].startswith("text/html")


def test_tuple_body_status_headers(start, tmp):
    server = serve(
        start,
        tmp,
        {"fn.py": """
            def handler():
                return "created", 201, {"X-Custom": "yes", "Content-Type": "text/plain"}
            """},
        filepath="fn.py",
        function_name="handler",
    )
    status, headers, body = server.call("POST")
    assert (status, body) == (201, b"created")
    assert headers["x-custom"] == "yes"
    assert headers["content-type"] == "text/plain"


ECHO = """
from flask import request

def main():
    return {
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        "json": request.get_json(silent=True),
        "data": request.get_data(as_text=True),
        "form": request.form.to_dict(),
        "param": request.headers.get("X-Fission-Params-Name"),
    }
"""


@pytest.fixture
def echo(start, tmp):
    return serve(start, tmp, {"main.py": ECHO})


def echo_call(server, *args, **kwargs):
    status, headers, body = server.call(*args, **kwargs)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def test_request_args_json_and_data(echo):
    got = echo_call(echo, "GET", "/a/b?x=1&x=2&y=z", headers={"X-Fission-Params-Name": "bob"})
    assert got["method"] == "GET"
    assert got["path"] == "/a/b"
    assert got["args"] == {"x": ["1", "2"], "y": ["z"]}
    assert got["param"] == "bob"

    got = echo_call(echo, "POST", "/", json.dumps({"k": [1, 2]}), {"Content-Type": "application/json"})
    assert got["json"] == {"k": [1, 2]}

    got = echo_call(echo, "PUT", "/", b"raw \x00bytes".decode("latin-1"), {"Content-Type": "application/octet-stream"})
    assert got["data"] == "raw \x00bytes"

    got = echo_call(echo, "POST", "/", "a=1&b=two", {"Content-Type": "application/x-www-form-urlencoded"})
    assert got["form"] == {"a": "1", "b": "two"}


def test_all_methods_including_patch_reach_the_function(echo):
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]:
        got = echo_call(echo, method, "/x")
        assert got["method"] == method
    status, headers, body = echo.call("HEAD", "/x")
    assert status == 200 and body == b""


def test_keep_alive_with_unread_and_chunked_bodies(start, tmp):
    server = serve(start, tmp, {"main.py": HELLO})
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        # The function never reads the body: the runtime must drain it.
        conn.request("POST", "/", body=b"x" * 300000, headers={"Content-Type": "application/octet-stream"})
        res = conn.getresponse()
        assert res.status == 200 and res.read() == b"Hello, world!\n"
        assert res.getheader("Connection") is None
        sock = conn.sock
        conn.request("POST", "/", body=iter([b"abc", b"def"]), encode_chunked=True)
        res = conn.getresponse()
        assert res.status == 200 and res.read() == b"Hello, world!\n"
        conn.request("GET", "/")
        res = conn.getresponse()
        assert res.read() == b"Hello, world!\n"
        assert conn.sock is sock  # same connection all along
    finally:
        conn.close()


def test_uncaught_exception_is_500_with_traceback_logged(start, tmp):
    server = serve(
        start,
        tmp,
        {"main.py": """
            from flask import request, abort

            def main():
                if request.args.get("mode") == "abort":
                    abort(404)
                if request.args.get("mode") == "none":
                    return None
                raise ValueError("kaboom")
            """},
    )
    status, _, _ = server.call("GET", "/")
    assert status == 500
    status, _, _ = server.call("GET", "/?mode=none")
    assert status == 500
    status, _, _ = server.call("GET", "/?mode=abort")
    assert status == 404
    logs = server.logs()
    assert "Function error: Traceback" in logs
    assert "ValueError: kaboom" in logs
    # still serving
    assert server.call("GET", "/?mode=abort")[0] == 404


# ---------------------------------------------------------------------------
# Entrypoints
# ---------------------------------------------------------------------------

PKG = {
    "main.py": HELLO,
    "mod.py": """
        def func():
            return "mod.func"
        """,
    "pkg/__init__.py": "",
    "pkg/mod.py": """
        def func():
            return "pkg.mod.func"
        """,
    "alt.py": """
        def main():
            return "alt default"
        def other():
            return "main-module other"
        """,
}


@pytest.mark.parametrize(
    "function_name,expected",
    [
        ("", b"Hello, world!\n"),
        ("mod.func", b"mod.func"),
        ("pkg.mod.func", b"pkg.mod.func"),
    ],
)
def test_directory_entrypoints(start, tmp, function_name, expected):
    server = serve(start, tmp, PKG, function_name=function_name)
    assert server.call()[2] == expected


def test_func_without_dot_uses_module_main(start, tmp):
    files = dict(PKG)
    files["main.py"] = """
        def main():
            return "main"
        def hello():
            return "main.hello"
        """
    server = serve(start, tmp, files, function_name="hello")
    assert server.call()[2] == b"main.hello"


def test_dependency_importable_from_directory(start, tmp):
    files = {
        # as `pip install -t <dir>` would lay out a dependency
        "shoutlib/__init__.py": """
            def shout(s):
                return s.upper() + "!"
            """,
        "shoutlib-1.0.dist-info/METADATA": "Name: shoutlib\nVersion: 1.0\n",
        "app.py": """
            import shoutlib

            def handler():
                return shoutlib.shout("deps work")
            """,
    }
    server = serve(start, tmp, files, function_name="app.handler")
    assert server.call()[2] == b"DEPS WORK!"


def test_v1_specialize_loads_codepath_main(start, tmp):
    write_files(tmp, {"user": HELLO})
    server = start(args=("--codepath", os.path.join(str(tmp), "user")))
    status, _, body = server.call("POST", "/specialize", b"", {"Content-Type": "text/plain"})
    assert status == 200, body
    assert server.call()[2] == b"Hello, world!\n"


# ---------------------------------------------------------------------------
# Load errors and lifecycle
# ---------------------------------------------------------------------------


def load_failure(start, tmp, files, filepath="", function_name=""):
    write_files(tmp, files)
    server = start()
    status, _, body = server.specialize(os.path.join(str(tmp), filepath) if filepath else str(tmp), function_name)
    text = body.decode()
    assert status == 500, text
    assert text.startswith("user code load error: ")
    assert "user code load error: " in server.logs()
    # still generic
    status, _, body = server.call()
    assert (status, body) == (500, b"Generic container: no requests supported")
    return text


def test_syntax_error_is_500_with_message(start, tmp):
    text = load_failure(start, tmp, {"bad.py": "def main(:\n    return 1\n"}, filepath="bad.py")
    assert "SyntaxError" in text
    assert "bad.py, line 1" in text


def test_syntax_error_in_directory_module(start, tmp):
    text = load_failure(start, tmp, {"main.py": "x = 1\nif x\n    pass\n"})
    assert "SyntaxError" in text
    assert "main.py, line 2" in text


def test_missing_function_is_500(start, tmp):
    text = load_failure(start, tmp, {"main.py": HELLO}, function_name="main.nope")
    assert 'no function "nope"' in text
    assert "main" in text.split("functions defined there:")[1]


def test_missing_module_is_500(start, tmp):
    text = load_failure(start, tmp, {"main.py": HELLO}, function_name="nothere.func")
    assert 'no module "nothere"' in text


def test_missing_dependency_is_reported_as_such(start, tmp):
    text = load_failure(start, tmp, {"main.py": "import no_such_dep_xyz\n" + HELLO})
    assert "ModuleNotFoundError" in text
    assert "no_such_dep_xyz" in text
    assert "main.py:1" in text


def test_exception_at_import_is_500(start, tmp):
    text = load_failure(start, tmp, {"main.py": "\n\nraise RuntimeError('broken at import')\n"})
    assert "RuntimeError: broken at import" in text
    assert "main.py:3" in text


def test_missing_filepath_is_500(start, tmp):
    text = load_failure(start, tmp, {}, filepath="does-not-exist")
    assert "does not exist" in text


def test_load_failure_then_successful_specialization(start, tmp):
    write_files(tmp, {"main.py": HELLO})
    server = start()
    status, _, _ = server.specialize(str(tmp), "main.nope")
    assert status == 500
    status, _, _ = server.specialize(str(tmp), "")
    assert status == 200
    assert server.call()[2] == b"Hello, world!\n"


def test_respecialize_is_400(start, tmp):
    server = serve(start, tmp, {"main.py": HELLO})
    status, _, body = server.specialize(str(tmp), "")
    assert (status, body) == (400, b"Not a generic container")
    status, _, body = server.call("POST", "/specialize")
    assert (status, body) == (400, b"Not a generic container")
    assert server.call()[0] == 200


def test_unspecialized_requests_are_500(start):
    server = start()
    for method, path in [("GET", "/"), ("POST", "/a/b"), ("DELETE", "/x?y=1"), ("PATCH", "/")]:
        status, _, body = server.call(method, path)
        assert (status, body) == (500, b"Generic container: no requests supported")
    assert server.call("GET", "/healthz")[0] == 200


def test_runtime_endpoints_answer_alike_however_spelled(start, tmp):
    # Exact spellings are answered by the request handler itself, others (a query string, a
    # chunked body) by the Flask routes: same answers, and connections stay usable.
    write_files(tmp, {"main.py": HELLO})
    server = start()
    bad = json.dumps({"filepath": str(tmp), "functionName": "main.nope"})
    good = json.dumps({"filepath": str(tmp), "functionName": ""}).encode()
    headers = {"Content-Type": "application/json"}
    for path in ["/v2/specialize", "/v2/specialize?x=1"]:
        status, _, body = server.call("POST", path, bad, headers)
        assert status == 500 and b'has no function "nope"' in body, (path, body)
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        conn.request("POST", "/v2/specialize", body=iter([good[:7], good[7:]]), headers=headers, encode_chunked=True)
        res = conn.getresponse()
        assert (res.status, res.read()) == (200, b"")
        sock = conn.sock
        conn.request("POST", "/v2/specialize", body=good, headers=headers)
        res = conn.getresponse()
        assert (res.status, res.read()) == (400, b"Not a generic container")
        assert res.getheader("Connection") is None
        conn.request("GET", "/healthz")
        res = conn.getresponse()
        assert (res.status, res.read()) == (200, b"")
        assert conn.sock is sock  # one connection throughout
    finally:
        conn.close()
    # Other methods on these paths are the function's.
    assert server.call("GET", "/v2/specialize")[2] == b"Hello, world!\n"
    assert server.call("POST", "/healthz")[2] == b"Hello, world!\n"


def test_http10_specialize_closes_the_connection(start, tmp):
    write_files(tmp, {"main.py": HELLO})
    server = start()
    body = json.dumps({"filepath": str(tmp), "functionName": ""}).encode()
    with socket.create_connection(server.addr, timeout=10) as s:
        s.sendall(b"POST /v2/specialize HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break  # closed by the server
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in data, data
    assert server.call()[2] == b"Hello, world!\n"


def test_invalid_specialize_body_is_400(start):
    server = start()
    status, _, body = server.call("POST", "/v2/specialize", "{nope", {"Content-Type": "application/json"})
    assert status == 400
    assert b"invalid specialize request" in body


# ---------------------------------------------------------------------------
# FISSION_LISTEN_FD
# ---------------------------------------------------------------------------


def test_serves_on_inherited_listening_socket(start, tmp):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        addr = sock.getsockname()
        fd = sock.fileno()
        # PORT points elsewhere: the server must ignore it and use the fd.
        server = start(env={"FISSION_LISTEN_FD": str(fd), "PORT": str(free_port())}, pass_fds=(fd,), addr=addr)
        assert "(fd {})".format(fd) in server.logs()
        write_files(tmp, {"main.py": HELLO})
        status, _, body = server.specialize(str(tmp), "")
        assert status == 200, body
        assert server.call()[2] == b"Hello, world!\n"
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# HTTP/1.1 server: keep-alive, bodies, limits, streaming
# ---------------------------------------------------------------------------


def raw_exchange(addr, data, timeout=10):
    """Sends raw bytes and reads until the server closes the connection."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


BODY_ECHO = """
from flask import request

def main():
    n = request.args.get("read")
    if n is not None:
        return request.stream.read(int(n))
    return request.get_data()
"""


def test_bodies_partly_read_are_drained_and_the_connection_reused(start, tmp):
    server = serve(start, tmp, {"main.py": BODY_ECHO})
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        conn.request("POST", "/?read=5", body=b"0123456789" * 1000)
        res = conn.getresponse()
        assert (res.status, res.read()) == (200, b"01234")
        sock = conn.sock
        conn.request("POST", "/", body=b"second")
        res = conn.getresponse()
        assert (res.status, res.read()) == (200, b"second")
        assert conn.sock is sock
    finally:
        conn.close()


def test_chunked_request_body_with_extensions_and_trailers_reaches_the_function(start, tmp):
    server = serve(start, tmp, {"main.py": BODY_ECHO})
    with socket.create_connection(server.addr, timeout=10) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    first, second = data.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200 ") and first.endswith(b"\r\n\r\nhello, world"), data
    assert second.startswith(b"200 ") and b"Connection: close" in second, data


def test_malformed_chunked_body_is_400_and_closes(start, tmp):
    server = serve(start, tmp, {"main.py": BODY_ECHO})
    data = raw_exchange(
        server.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert data.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: abc\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 3\r\nContent-Length: 4\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ],
)
def test_unusable_body_framing_is_400_and_closes(start, tmp, head):
    server = serve(start, tmp, {"main.py": BODY_ECHO})
    data = raw_exchange(server.addr, b"POST / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\nabcd")
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"Connection: close" in data


def test_body_over_the_limit_is_413_before_the_function_runs(start, tmp):
    marker = os.path.join(str(tmp), "called")
    server = serve(
        start,
        tmp,
        {"main.py": """
            def main():
                open({!r}, "w").close()
                return "called"
            """.format(marker)},
        env={"MAX_BODY_BYTES": "1000"},
    )
    status, headers, body = server.call("POST", "/", b"x" * 1000)
    assert (status, body) == (200, b"called")
    os.remove(marker)
    # Announced over the limit: refused before the body is sent (the client may stop there).
    with socket.create_connection(server.addr, timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert b"100 Continue" not in data
    assert b"Connection: close" in data
    assert b"over the limit of 1000 bytes" in data
    assert not os.path.exists(marker)


def test_chunked_body_over_the_limit_is_413_when_read(start, tmp):
    server = serve(start, tmp, {"main.py": BODY_ECHO}, env={"MAX_BODY_BYTES": "1000"})
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        conn.request("POST", "/", body=iter([b"x" * 600, b"y" * 600]), encode_chunked=True)
        res = conn.getresponse()
        assert res.status == 413
        res.read()
    finally:
        conn.close()
    ok = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        ok.request("POST", "/", body=iter([b"x" * 500, b"y" * 500]), encode_chunked=True)
        res = ok.getresponse()
        assert (res.status, res.read()) == (200, b"x" * 500 + b"y" * 500)
    finally:
        ok.close()


def test_invalid_body_limit_setting_stops_the_runtime():
    proc = subprocess.run(
        [RUNTIME_PYTHON, "-I", "-S", SERVER],
        env={"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "MAX_BODY_BYTES": "lots"},
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert b"invalid MAX_BODY_BYTES 'lots'" in proc.stderr


def test_expect_100_continue_gets_100_then_the_answer(start, tmp):
    server = serve(start, tmp, {"main.py": BODY_ECHO})
    with socket.create_connection(server.addr, timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got
        s.sendall(b"abcd")
        got = got[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        while not got.endswith(b"abcd"):
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 "), got


def test_head_has_length_but_no_body_and_keeps_the_connection(start, tmp):
    server = serve(start, tmp, {"main.py": HELLO})
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        conn.request("HEAD", "/")
        res = conn.getresponse()
        assert res.status == 200
        assert res.getheader("Content-Length") == str(len(b"Hello, world!\n"))
        assert res.read() == b""
        sock = conn.sock
        conn.request("GET", "/")
        res = conn.getresponse()
        assert res.read() == b"Hello, world!\n"
        assert conn.sock is sock
    finally:
        conn.close()


STREAM = """
import os, time
from flask import Response, request

def main():
    gate = request.args["gate"]
    fail = request.args.get("fail")

    def gen():
        yield "first;"
        # Wait until the client has seen the first chunk: proves it was sent at once.
        deadline = time.monotonic() + 10
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        if fail:
            raise RuntimeError("generator broke")
        yield "second"

    return Response(gen(), mimetype="text/plain")
"""


def test_generator_body_streams_chunk_by_chunk(start, tmp):
    server = serve(start, tmp, {"main.py": STREAM})
    gate = os.path.join(str(tmp), "gate")
    conn = http.client.HTTPConnection(*server.addr, timeout=10)
    try:
        conn.request("GET", "/?gate=" + gate)
        res = conn.getresponse()
        assert res.getheader("Transfer-Encoding") == "chunked"
        assert res.read1() == b"first;"
        open(gate, "w").close()
        assert res.read() == b"second"
        sock = conn.sock
        conn.request("GET", "/?gate=" + gate)
        assert conn.getresponse().read() == b"first;second"
        assert conn.sock is sock
    finally:
        conn.close()


def test_http10_streamed_body_ends_with_the_connection(start, tmp):
    server = serve(start, tmp, {"main.py": STREAM})
    gate = os.path.join(str(tmp), "gate")
    open(gate, "w").close()
    data = raw_exchange(server.addr, "GET /?gate={} HTTP/1.0\r\n\r\n".format(gate).encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"first;second"


def test_generator_failing_midway_cuts_the_response_and_logs(start, tmp):
    server = serve(start, tmp, {"main.py": STREAM})
    gate = os.path.join(str(tmp), "gate")
    open(gate, "w").close()
    data = raw_exchange(server.addr, "GET /?fail=1&gate={} HTTP/1.1\r\nHost: x\r\n\r\n".format(gate).encode())
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"first;" in data and not data.endswith(b"0\r\n\r\n")  # no last chunk: visibly cut
    assert "Function error: Traceback" in server.logs()
    assert "RuntimeError: generator broke" in server.logs()
    assert server.call("GET", "/?gate=" + gate)[2] == b"first;second"


def test_function_asking_to_close_the_connection_is_obeyed(start, tmp):
    server = serve(
        start,
        tmp,
        {"main.py": """
            def main():
                return "bye", 200, {"Connection": "close"}
            """},
    )
    data = raw_exchange(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nbye"), data


def test_idle_keep_alive_connections_are_closed_after_the_timeout(start, tmp):
    server = serve(start, tmp, {"main.py": HELLO}, env={"KEEPALIVE_TIMEOUT": "0.3"})
    with socket.create_connection(server.addr, timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        waited = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"Hello, world!\n")
    assert 0.2 < waited < 5, waited


PATHS = """
from flask import request

def main():
    return {
        "path": request.path,
        "query": request.query_string.decode(),
        "host": request.host,
        "multi": request.headers.get("X-Multi"),
        "under": request.headers.get("X_Under"),
        "remote": request.remote_addr,
    }
"""


def test_request_target_and_headers_reach_flask_as_werkzeug_would_give_them(start, tmp):
    server = serve(start, tmp, {"main.py": PATHS})
    data = raw_exchange(
        server.addr,
        b"GET /a%20b/%C3%A9?x=%20y&z HTTP/1.1\r\nHost: h.example:81\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
        b"X_Under: no\r\nConnection: close\r\n\r\n",
    )
    got = json.loads(data.partition(b"\r\n\r\n")[2])
    assert got == {
        "path": "/a b/\u00e9",
        "query": "x=%20y&z",
        "host": "h.example:81",
        "multi": "1,2",
        "under": None,
        "remote": "127.0.0.1",
    }
    data = raw_exchange(server.addr, b"GET http://abs.example/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
    got = json.loads(data.partition(b"\r\n\r\n")[2])
    assert (got["path"], got["query"], got["host"]) == ("/p", "q=1", "abs.example")


def test_garbage_request_line_is_400(start, tmp):
    server = serve(start, tmp, {"main.py": HELLO})
    data = raw_exchange(server.addr, b"NOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert server.call()[2] == b"Hello, world!\n"


def test_unusable_listen_address_or_fd_stops_the_runtime_with_a_message():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [RUNTIME_PYTHON, "-I", "-S", SERVER],
            env={"PATH": "/usr/bin:/bin", "PORT": str(port)},
            capture_output=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert "cannot listen on 127.0.0.1:{}".format(port).encode() in proc.stderr
    with open(os.devnull, "rb") as not_a_socket:
        fd = not_a_socket.fileno()
        proc = subprocess.run(
            [RUNTIME_PYTHON, "-I", "-S", SERVER],
            env={"PATH": "/usr/bin:/bin", "FISSION_LISTEN_FD": str(fd)},
            capture_output=True,
            pass_fds=(fd,),
            timeout=30,
        )
    assert proc.returncode == 2
    assert "cannot listen on fd {}".format(fd).encode() in proc.stderr
