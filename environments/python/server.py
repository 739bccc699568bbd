"""fission-rs Python runtime ("environment").

Speaks Fission's python-env contract: a generic instance starts warm (Flask
imported, socket listening), is specialized exactly once with
POST /v2/specialize (or the v1 POST /specialize), and from then on every
request is handed to the loaded user function.  See ../README.md.

Launched as ``/usr/bin/python3 -I -S server.py``: isolated and without
site-packages, so the vendored dependencies are put on sys.path here.
"""

import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "vendor"))

# Line-buffered logs even when stdout is a pipe (-I ignores PYTHONUNBUFFERED).
try:
    sys.stdout.reconfigure(line_buffering=True)
except (AttributeError, ValueError):
    pass

import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

# Heavy imports happen before serving so a generic instance is warm.
from flask import Flask, current_app, request  # noqa: E402
from werkzeug.exceptions import HTTPException, InternalServerError  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def _arg_value(name):
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--" + name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--" + name + "="):
            return a[len(name) + 3 :]
    return None


LISTEN_FD = os.environ.get("FISSION_LISTEN_FD", "")
PORT = int(_arg_value("port") or os.environ.get("RUNTIME_PORT") or os.environ.get("PORT") or 8888)
HOST = os.environ.get("HOST") or "127.0.0.1"
CODEPATH = _arg_value("codepath") or os.environ.get("FISSION_CODEPATH") or "/userfunc/user"
# Idle keep-alive timeout (seconds) for client connections.
KEEPALIVE_TIMEOUT = float(os.environ.get("KEEPALIVE_TIMEOUT") or 120)
# Request bodies the function did not read are drained (so the connection can
# be reused) up to this many bytes; larger leftovers close the connection.
DRAIN_LIMIT = 64 * 1024 * 1024
ACCESS_LOG = os.environ.get("ACCESS_LOG", "") not in ("", "0", "false", "no")


def log(msg):
    sys.stderr.write(msg.rstrip("\n") + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Loading user code
# ---------------------------------------------------------------------------


class LoadError(Exception):
    """A load failure whose message is the complete user-facing explanation."""


def _display_path(path, root):
    if not path:
        return path
    base = root if os.path.isdir(root) else os.path.dirname(root)
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        return path
    if rel.startswith(".."):
        return path
    return rel


def describe_load_error(exc, root):
    """One readable explanation of why user code failed to load."""
    if isinstance(exc, LoadError):
        return str(exc)
    name = type(exc).__name__
    if isinstance(exc, SyntaxError):
        where = ""
        if exc.filename:
            where = " ({}, line {})".format(_display_path(exc.filename, root), exc.lineno)
        text = "{}: {}{}".format(name, exc.msg, where)
        if exc.text:
            line = exc.text.rstrip("\n")
            stripped = line.lstrip()
            text += "\n    " + stripped
            if exc.offset:
                caret_at = max(exc.offset - 1 - (len(line) - len(stripped)), 0)
                text += "\n    " + " " * caret_at + "^"
        return text
    text = "{}: {}".format(name, exc)
    # Point at the innermost frame inside the user's code.
    base = root if os.path.isdir(root) else os.path.dirname(root)
    user_frames = [
        fs
        for fs in traceback.extract_tb(exc.__traceback__)
        if fs.filename == root or fs.filename.startswith(base.rstrip(os.sep) + os.sep)
    ]
    if user_frames:
        fs = user_frames[-1]
        text += " (at {}:{})".format(_display_path(fs.filename, root), fs.lineno)
    return text


def _load_file_module(path, module_name):
    """Executes a single source file (any extension) as a module."""
    if not module_name.isidentifier() or module_name in sys.modules:
        module_name = "userfunc"
    loader = importlib.machinery.SourceFileLoader(module_name, path)
    spec = importlib.util.spec_from_loader(module_name, loader, origin=path)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _missing_module(exc, module_name):
    """True when ModuleNotFoundError is about module_name itself (or a parent
    package of it), not about something the user's module imports."""
    missing = getattr(exc, "name", None) or ""
    return missing == module_name or module_name.startswith(missing + ".")


def _functions_of(module):
    return sorted(
        n
        for n, v in vars(module).items()
        if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
    )


def load_user_function(filepath, function_name):
    """Resolves a LoadReq (filepath + functionName) to a callable.

    ""          -> module "main", function "main"
    "func"      -> module "main", function "func"
    "a.b.func"  -> module "a.b", function "func" (split on the last dot)
    A file filepath is itself the module; a directory is put first on
    sys.path and the module imported by name.
    """
    function_name = (function_name or "").strip()
    if not filepath:
        raise LoadError('specialize request has no "filepath"')
    filepath = os.path.abspath(filepath)
    if not os.path.exists(filepath):
        raise LoadError("code path {} does not exist".format(filepath))

    if "." in function_name:
        module_name, func_name = function_name.rsplit(".", 1)
        if not module_name or not func_name:
            raise LoadError('invalid entrypoint "{}"'.format(function_name))
    else:
        module_name, func_name = "main", function_name or "main"

    if os.path.isdir(filepath):
        if filepath not in sys.path:
            sys.path.insert(0, filepath)
        importlib.invalidate_caches()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not _missing_module(exc, module_name):
                raise
            rel = module_name.replace(".", os.sep)
            raise LoadError(
                'entrypoint "{}": no module "{}" in {} (looked for {}.py and {}/__init__.py)'.format(
                    function_name or "main.main", module_name, filepath, rel, rel
                )
            ) from None
        module_file = getattr(module, "__file__", None)
        if not module_file or not os.path.abspath(module_file).startswith(filepath.rstrip(os.sep) + os.sep):
            raise LoadError(
                'entrypoint "{}": module "{}" resolves to {} outside {} (a module of the runtime or the '
                "standard library has that name); rename your module".format(
                    function_name or "main.main", module_name, module_file or "a built-in module", filepath
                )
            )
        shown = _display_path(module_file, filepath)
    else:
        module = _load_file_module(filepath, module_name.rsplit(".", 1)[-1])
        shown = os.path.basename(filepath)

    func = getattr(module, func_name, None)
    if func is None:
        funcs = _functions_of(module)
        raise LoadError(
            'module {} has no function "{}" (functions defined there: {})'.format(
                shown, func_name, ", ".join(funcs) if funcs else "none"
            )
        )
    if not callable(func):
        raise LoadError(
            '"{}" in module {} is a {}, not a function'.format(func_name, shown, type(func).__name__)
        )
    return func


# ---------------------------------------------------------------------------
# Flask application
# ---------------------------------------------------------------------------

app = Flask(__name__)

_state_lock = threading.Lock()
_user_function = None
_specializing = False

# We deliberately also route PATCH (Fission's python-env answers 405).
METHODS = ["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH"]


def _specialize(filepath, function_name, label):
    global _user_function, _specializing
    with _state_lock:
        if _user_function is not None or _specializing:
            return "Not a generic container", 400, {"Content-Type": "text/plain; charset=utf-8"}
        _specializing = True
    started = time.perf_counter()
    try:
        func = load_user_function(filepath, function_name)
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything, even SystemExit
        with _state_lock:
            _specializing = False
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = "user code load error: " + describe_load_error(exc, os.path.abspath(filepath or "."))
        log(msg)
        if not isinstance(exc, LoadError):
            log("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return msg + "\n", 500, {"Content-Type": "text/plain; charset=utf-8"}
    with _state_lock:
        _user_function = func
        _specializing = False
    print(
        "specialized ({}): {}.{} from {} in {:.1f} ms".format(
            label,
            getattr(func, "__module__", "?"),
            getattr(func, "__name__", "?"),
            filepath,
            (time.perf_counter() - started) * 1000,
        )
    )
    return "", 200


@app.route("/healthz", methods=["GET"])
def healthz():
    return "", 200


def _specialize_v2(raw):
    """Handles a v2 load request given its raw body."""
    try:
        load_req = json.loads(raw) if raw.strip() else {}
        if not isinstance(load_req, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        return "invalid specialize request: {}\n".format(exc), 400, {"Content-Type": "text/plain; charset=utf-8"}
    return _specialize(load_req.get("filepath"), load_req.get("functionName"), "v2")


@app.route("/v2/specialize", methods=["POST"])
def specialize_v2():
    return _specialize_v2(request.get_data(cache=False))


@app.route("/specialize", methods=["POST"])
def specialize_v1():
    return _specialize(CODEPATH, "", "v1")


@app.route("/", defaults={"path": ""}, methods=METHODS)
@app.route("/<path:path>", methods=METHODS)
def dispatch(path):
    func = _user_function
    if func is None:
        return "Generic container: no requests supported", 500, {"Content-Type": "text/plain; charset=utf-8"}
    try:
        return current_app.make_response(func())
    except HTTPException:
        raise  # abort(404) etc. are answers, not errors
    except Exception as exc:  # noqa: BLE001
        log("Function error: " + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return InternalServerError()


# ---------------------------------------------------------------------------
# HTTP/1.1 keep-alive request handler
# ---------------------------------------------------------------------------
#
# Werkzeug's development handler answers every request with
# "Connection: close".  This handler reuses werkzeug's WSGI environ building
# but writes responses itself so connections stay open: request bodies are
# bounded by Content-Length (or de-chunked) and whatever the function left
# unread is drained before the next request is parsed.


class _BodyReader:
    """wsgi.input limited to Content-Length bytes; tracks what is unread."""

    def __init__(self, rfile, length):
        self._rfile = rfile
        self.remaining = length

    def read(self, size=-1):
        if self.remaining <= 0:
            return b""
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._rfile.read(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
            raise ConnectionError("client closed the connection mid-body")
        return data

    def readline(self, size=-1):
        if self.remaining <= 0:
            return b""
        if size is None or size < 0 or size > self.remaining:
            size = self.remaining
        data = self._rfile.readline(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return data

    def readlines(self, hint=-1):
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self, limit):
        """Discards the unread rest; False if more than limit bytes remain."""
        if self.remaining > limit:
            return False
        while self.remaining > 0:
            if not self.read(min(self.remaining, 65536)):
                return False
        return True


_NO_BODY_STATUSES = (204, 304)

# The runtime's own endpoints, answered by the request handler itself when the request is
# spelled exactly so (no query string, a Content-Length body): a cold start is one specialize
# request, and building a WSGI environ plus a Flask dispatch for it costs ~0.4 ms, a third of
# the runtime's share. Every other spelling still reaches the Flask routes above.
_DIRECT = {("POST", "/v2/specialize"), ("POST", "/specialize"), ("GET", "/healthz")}


class KeepAliveHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def handle_one_request(self):
        # Wait for the next request line at most KEEPALIVE_TIMEOUT; no
        # timeout while a request is being read or answered.
        try:
            self.connection.settimeout(KEEPALIVE_TIMEOUT)
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except (OSError, ValueError):
            self.close_connection = True
            return
        finally:
            try:
                self.connection.settimeout(None)
            except OSError:
                pass
        super().handle_one_request()

    def _answer_directly(self):
        """Answers a _DIRECT endpoint without Flask; False (nothing read) when the body is
        chunked or its length unusable, to let the WSGI path deal with it."""
        if "Transfer-Encoding" in self.headers:
            return False
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return False
        if length < 0 or length > DRAIN_LIMIT:
            return False
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return True
        if self.path == "/healthz":
            result = ("", 200)
        elif self.path == "/specialize":
            result = _specialize(CODEPATH, "", "v1")
        else:
            result = _specialize_v2(body)
        text, status = result[0], result[1]
        data = text.encode("utf-8")
        if self.request_version != "HTTP/1.1":
            self.close_connection = True
        head = [
            "{} {} {}".format(self.protocol_version, status, self.responses[status][0]),
            "Content-Type: text/plain; charset=utf-8",
            "Content-Length: {}".format(len(data)),
            "Date: " + self.date_time_string(),
            "Server: " + self.version_string(),
        ]
        if self.close_connection:
            head.append("Connection: close")
        self.log_request(status)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        return True

    def log_request(self, code="-", size="-"):
        if ACCESS_LOG:
            log('{} "{} {}" {}'.format(self.address_string(), self.command, self.path, code))

    def log_error(self, format, *args):  # noqa: A002 - signature from http.server
        log("http: " + (format % args))

    def run_wsgi(self):
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if (self.command, self.path) in _DIRECT and self._answer_directly():
            return

        self.environ = environ = self.make_environ()
        if self.request_version != "HTTP/1.1":
            self.close_connection = True

        body = None
        if not environ.get("wsgi.input_terminated"):  # not chunked
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length < 0:
                    raise ValueError
            except ValueError:
                self.close_connection = True
                self.send_error(400, "Bad Content-Length")
                return
            body = _BodyReader(self.rfile, length)
            environ["wsgi.input"] = body
            environ["wsgi.input_terminated"] = True

        is_head = environ["REQUEST_METHOD"] == "HEAD"
        state = {"status": None, "headers": None, "sent": False, "chunked": False, "bodyless": False}

        def start_response(status, headers, exc_info=None):
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response called twice")
            state["status"] = status
            state["headers"] = headers
            return write

        def header_block():
            status = state["status"]
            code = int(status.split(None, 1)[0])
            self.log_request(code)
            state["bodyless"] = is_head or code < 200 or code in _NO_BODY_STATUSES
            lines = ["{} {}".format(self.protocol_version, status)]
            names = set()
            for name, value in state["headers"]:
                lname = name.lower()
                names.add(lname)
                if lname == "connection" and value.lower().strip() == "close":
                    self.close_connection = True
                lines.append("{}: {}".format(name, value))
            if "date" not in names:
                lines.append("Date: " + self.date_time_string())
            if "server" not in names:
                lines.append("Server: " + self.version_string())
            if "content-length" not in names and not state["bodyless"]:
                if self.close_connection:
                    pass  # the body ends when the connection closes
                else:
                    state["chunked"] = True
                    lines.append("Transfer-Encoding: chunked")
            if self.close_connection and "connection" not in names:
                lines.append("Connection: close")
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        def write(data):
            assert state["status"] is not None, "write() before start_response()"
            out = b""
            if not state["sent"]:
                out = header_block()
                state["sent"] = True
            if data and not state["bodyless"]:
                if state["chunked"]:
                    out += b"%x\r\n" % len(data) + data + b"\r\n"
                else:
                    out += data
            if out:
                self.wfile.write(out)

        try:
            app_iter = self.server.app(environ, start_response)
            try:
                for data in app_iter:
                    write(data)
                if not state["sent"]:
                    write(b"")
                if state["chunked"]:
                    self.wfile.write(b"0\r\n\r\n")
            finally:
                if hasattr(app_iter, "close"):
                    app_iter.close()
        except (ConnectionError, socket.timeout, BrokenPipeError):
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001
            log("Function error: " + traceback.format_exc())
            self.close_connection = True
            if not state["sent"]:
                msg = b"Internal Server Error"
                try:
                    self.wfile.write(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(msg), msg)
                    )
                except OSError:
                    pass
            return

        # Make the connection reusable: discard what the function did not read.
        try:
            if body is not None:
                if not body.drain(DRAIN_LIMIT):
                    self.close_connection = True
            elif not self.close_connection:
                stream = environ["wsgi.input"]  # de-chunked input
                drained = 0
                while drained <= DRAIN_LIMIT:
                    chunk = stream.read(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
                else:
                    self.close_connection = True
        except (OSError, ValueError):
            self.close_connection = True


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    fd = None
    host, port = HOST, PORT
    if LISTEN_FD:
        try:
            fd = int(LISTEN_FD)
            probe = socket.socket(fileno=fd)  # learn the family of the inherited socket
        except (ValueError, OSError) as exc:
            log("invalid FISSION_LISTEN_FD {!r}: {}".format(LISTEN_FD, exc))
            sys.exit(2)
        try:
            addr = probe.getsockname()
            host, port = addr[0], addr[1]
        finally:
            probe.detach()
    # Each instance compiles its function once; writing the bytecode next to the code would
    # only cost time (~0.7 ms on ext4) on every cold start, and in a sandbox /userfunc is
    # read-only anyway.
    sys.dont_write_bytecode = True
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler, fd=fd)
    print(
        "fission-rs python runtime listening on {}:{}{}".format(
            server.server_address[0], server.server_address[1], " (fd {})".format(fd) if fd is not None else ""
        )
    )
    try:
        server.serve_forever(poll_interval=3600)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
