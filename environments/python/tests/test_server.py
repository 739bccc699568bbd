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


@pytest.fixture
def start(tmp_path):
    servers = []

    def _start(env=None, args=(), pass_fds=(), addr=None):
        port = free_port()
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port)}
        full_env.update(env or {})
        log_path = str(tmp_path / "server-{}.log".format(len(servers)))
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
