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

import email.utils  # noqa: E402
import http.server  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import urllib.parse  # noqa: E402

# Heavy imports happen before serving so a generic instance is warm.
from flask import Flask, current_app, request  # noqa: E402
from werkzeug.exceptions import (  # noqa: E402
    BadRequest,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
)

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




def _env_int(name, default):
    value = os.environ.get(name) or ""
    if not value:
        return default
    try:
        number = int(value)
        if number < 0:
            raise ValueError
    except ValueError:
        sys.stderr.write("invalid {} {!r}: expected a number of bytes\n".format(name, value))
        sys.exit(2)
    return number


def configure():
    """Reads the settings from the arguments and the environment. Runs at import, and again in
    a child of the zygote (zygote.py), which imported this module under the zygote's own
    environment and gets the instance's afterwards."""
    global LISTEN_FD, PORT, HOST, CODEPATH, KEEPALIVE_TIMEOUT, BODY_LIMIT, ACCESS_LOG
    LISTEN_FD = os.environ.get("FISSION_LISTEN_FD", "")
    PORT = int(_arg_value("port") or os.environ.get("RUNTIME_PORT") or os.environ.get("PORT") or 8888)
    HOST = os.environ.get("HOST") or "127.0.0.1"
    CODEPATH = _arg_value("codepath") or os.environ.get("FISSION_CODEPATH") or "/userfunc/user"
    # Idle keep-alive timeout (seconds) for client connections.
    KEEPALIVE_TIMEOUT = float(os.environ.get("KEEPALIVE_TIMEOUT") or 120)
    # Request bodies over this many bytes are refused with 413 (the router's default limit too).
    BODY_LIMIT = _env_int("MAX_BODY_BYTES", 64 * 1024 * 1024)
    ACCESS_LOG = os.environ.get("ACCESS_LOG", "") not in ("", "0", "false", "no")


configure()


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
# HTTP/1.1 server
# ---------------------------------------------------------------------------
#
# A small WSGI server on the standard library's public socketserver/http.server API (the
# request line and headers are parsed by BaseHTTPRequestHandler.parse_request): one thread per
# connection, HTTP/1.1 keep-alive, Content-Length and chunked request bodies, chunked responses
# when the length is unknown. It uses nothing of werkzeug's development server, so upgrading
# Flask or werkzeug cannot break it. Measured against werkzeug's server and waitress in
# bench/bench.py (numbers in bench/README.md).

SERVER_SOFTWARE = "fission-rs-python"


class _BodyReader:
    """wsgi.input for a Content-Length body: at most that many bytes; tracks what is unread."""

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

    def drain(self):
        """Discards the unread rest so the connection can carry the next request."""
        while self.remaining > 0:
            self.read(min(self.remaining, 65536))


class _ChunkedReader(io.RawIOBase):
    """wsgi.input for a chunked body: the de-chunked bytes, at most `limit` of them (more
    raises RequestEntityTooLarge, which Flask answers with 413)."""

    def __init__(self, rfile, limit):
        super().__init__()
        self._rfile = rfile
        self._limit = limit
        self._total = 0
        self._left = 0  # bytes left in the current chunk
        self.done = False  # the last chunk and the trailers have been read
        self._failed = False  # the framing was broken or over the limit: the stream is lost

    def readable(self):
        return True

    def _next_chunk(self):
        line = self._rfile.readline(4096)
        if not line:
            raise ConnectionError("client closed the connection mid-body")
        size = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not size or not all(c in b"0123456789abcdefABCDEF" for c in size):
            raise BadRequest("malformed chunked request body")
        size = int(size, 16)
        if size == 0:
            while True:  # trailer fields, then the empty line
                line = self._rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed the connection mid-body")
                if line in (b"\r\n", b"\n"):
                    break
            self.done = True
            return
        self._total += size
        if self._total > self._limit:
            raise RequestEntityTooLarge("request body over {} bytes".format(self._limit))
        self._left = size

    def readinto(self, buf):
        if self._failed:
            raise ValueError("the chunked request body could not be read")
        try:
            return self._readinto(buf)
        except BaseException:
            self._failed = True
            raise

    def _readinto(self, buf):
        while self._left == 0:
            if self.done:
                return 0
            self._next_chunk()
        data = self._rfile.read(min(len(buf), self._left))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        n = len(data)
        buf[:n] = data
        self._left -= n
        if self._left == 0 and self._rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BadRequest("malformed chunked request body")
        return n

    def drain(self):
        while not self.done:
            self.read(65536)


_NO_BODY_STATUSES = (204, 304)

# The runtime's own endpoints, answered by the request handler itself when the request is
# spelled exactly so (no query string, a Content-Length body): a cold start is one specialize
# request, and building a WSGI environ plus a Flask dispatch for it costs ~0.4 ms, a third of
# the runtime's share. Every other spelling still reaches the Flask routes above.
_DIRECT = {("POST", "/v2/specialize"), ("POST", "/specialize"), ("GET", "/healthz")}

_date = (0, "")


def _http_date():
    """The Date header value, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_SOFTWARE
    # Until the request line is parsed; so a malformed one is answered with a status line and
    # headers (the stdlib's default, HTTP/0.9, would send a bare HTML page).
    default_request_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def handle_one_request(self):
        # Wait for the next request line at most KEEPALIVE_TIMEOUT; no timeout while a
        # request is being read or answered.
        try:
            self.connection.settimeout(KEEPALIVE_TIMEOUT)
            ready = self.rfile.peek(1)
            self.connection.settimeout(None)
        except (OSError, ValueError):
            ready = b""
        if not ready:
            self.close_connection = True
            return
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return  # parse_request has answered (400, 431, 505…)
        self._serve()

    def handle_expect_100(self):
        # "100 Continue" is sent by _serve once the body is known to be acceptable.
        return True

    def log_request(self, code="-", size="-"):
        if ACCESS_LOG:
            log('{} "{} {}" {}'.format(self.client_address[0], self.command, self.path, code))

    def log_message(self, format, *args):  # noqa: A002 - signature from http.server
        log("http: " + (format % args))

    def _send_plain(self, status, text):
        """A complete text/plain answer written at once."""
        data = text.encode("utf-8")
        self.log_request(status)
        head = (
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
            "Date: {}\r\n{}\r\n"
        ).format(
            status,
            self.responses[status][0],
            len(data),
            _http_date(),
            "Connection: close\r\n" if self.close_connection else "",
        )
        self.wfile.write(head.encode("latin-1") + data)

    def _refuse(self, status, text):
        """Answers a request whose body will not be read; the connection cannot be reused."""
        self.close_connection = True
        self._send_plain(status, text + "\n")
        # Closing with unread data in the receive buffer sends a reset, which can destroy the
        # answer before the client reads it: stop sending, then discard what the client is
        # still sending for a moment (a "lingering close").
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            discarded = 0
            while discarded < 1024 * 1024:
                data = self.connection.recv(65536)
                if not data:
                    break
                discarded += len(data)
        except OSError:
            pass

    def _serve(self):
        headers = self.headers
        if self.request_version != "HTTP/1.1":
            self.close_connection = True

        te = headers.get("Transfer-Encoding")
        length = 0
        if te is not None:
            if te.rsplit(",", 1)[-1].strip().lower() != "chunked":
                return self._refuse(400, "Bad Request: unsupported Transfer-Encoding " + te)
        else:
            lengths = headers.get_all("Content-Length")
            if lengths:
                value = lengths[0].strip()
                if len(set(v.strip() for v in lengths)) > 1 or not (value.isascii() and value.isdigit()):
                    return self._refuse(400, "Bad Request: invalid Content-Length")
                length = int(value)
                if length > BODY_LIMIT:
                    return self._refuse(
                        413, "Request body of {} bytes is over the limit of {} bytes".format(length, BODY_LIMIT)
                    )
        if self.request_version == "HTTP/1.1" and headers.get("Expect", "").strip().lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        if te is None and (self.command, self.path) in _DIRECT:
            return self._answer_directly(length)

        if te is None:
            body = _BodyReader(self.rfile, length)
        else:
            body = _ChunkedReader(self.rfile, BODY_LIMIT)
        environ = self._environ(body, te is not None)
        is_head = self.command == "HEAD"
        state = {"status": None, "headers": None, "sent": False, "chunked": False, "bodyless": False}

        def start_response(status, response_headers, exc_info=None):
            if exc_info:
                try:
                    if state["sent"]:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif state["status"] is not None:
                raise AssertionError("start_response called twice")
            state["status"] = status
            state["headers"] = response_headers
            return write

        def header_block():
            status = state["status"]
            code = int(status.split(None, 1)[0])
            self.log_request(code)
            state["bodyless"] = is_head or code < 200 or code in _NO_BODY_STATUSES
            lines = ["HTTP/1.1 " + status]
            has_length = has_date = has_connection = False
            for name, value in state["headers"]:
                lname = name.lower()
                if lname == "content-length":
                    has_length = True
                elif lname == "date":
                    has_date = True
                elif lname == "connection":
                    has_connection = True
                    if value.lower().strip() == "close":
                        self.close_connection = True
                lines.append(name + ": " + value)
            if not has_date:
                lines.append("Date: " + _http_date())
            if not has_length and not state["bodyless"] and not self.close_connection:
                # Without a length the body ends with the last chunk (or, on a connection
                # that closes anyway, with the connection).
                state["chunked"] = True
                lines.append("Transfer-Encoding: chunked")
            if self.close_connection and not has_connection:
                lines.append("Connection: close")
            return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

        def write(data):
            if state["status"] is None:
                raise AssertionError("write() before start_response()")
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
            app_iter = app(environ, start_response)
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
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001 - e.g. a generator body failing after the first chunk
            log("Function error: " + traceback.format_exc())
            self.close_connection = True
            if not state["sent"]:
                try:
                    self._send_plain(500, "Internal Server Error")
                except OSError:
                    pass
            return

        # Make the connection reusable: discard what the function did not read (at most
        # BODY_LIMIT bytes, already checked for a Content-Length body).
        if not self.close_connection:
            try:
                body.drain()
            except (OSError, ValueError, HTTPException):
                self.close_connection = True

    def _environ(self, body, chunked):
        """The WSGI environ (PEP 3333), with the keys werkzeug's own server sets."""
        target = self.path
        host = None
        if not target.startswith("/") and "://" in target:  # absolute-form request target
            parts = urllib.parse.urlsplit(target)
            host = parts.netloc
            target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        path, _, query = target.partition("?")
        server_address = self.server.server_address
        environ = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,  # wsgi.input itself ends where the body ends
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            # PEP 3333: the URL-decoded bytes as latin-1 (the request line was decoded so).
            "PATH_INFO": urllib.parse.unquote_to_bytes(path.encode("latin-1")).decode("latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": self.path,
            "RAW_URI": self.path,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "SERVER_NAME": server_address[0],
            "SERVER_PORT": str(server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
        }
        for name, value in self.headers.items():
            if "_" in name:
                continue  # as werkzeug: X_Foo would be indistinguishable from X-Foo
            key = name.upper().replace("-", "_")
            if "\n" in value:
                value = value.replace("\r\n", "").replace("\n", "")
            if key == "CONTENT_LENGTH":
                if not chunked:
                    environ[key] = value
            elif key == "CONTENT_TYPE":
                environ[key] = value
            else:
                key = "HTTP_" + key
                previous = environ.get(key)
                environ[key] = value if previous is None else previous + "," + value
        if host:
            environ["HTTP_HOST"] = host
        return environ

    def _answer_directly(self, length):
        """Answers a _DIRECT endpoint without Flask."""
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # the client went away mid-body
            return
        if self.path == "/healthz":
            result = ("", 200)
        elif self.path == "/specialize":
            result = _specialize(CODEPATH, "", "v1")
        else:
            result = _specialize_v2(body)
        self._send_plain(result[1], result[0])


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True  # connections never keep the process alive
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away
        log("http: error on a connection from {}: {}".format(client_address[0], traceback.format_exc()))


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(host, port, fd=None):
    """A server on the inherited listening socket fd, else bound to host:port."""
    if fd is None:
        cls = _Server6 if ":" in host else _Server
        return cls((host, port), _Handler)
    server = _Server(None, _Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=fd)  # already bound and listening
    server.server_address = server.socket.getsockname()
    return server


def _warm_up():
    """Runs one request through Flask before serving: the first dispatch imports and builds
    what Flask and werkzeug set up lazily (encodings.idna for the host, the URL matcher…),
    ~2 ms that would otherwise fall on the first call after specialization."""
    environ = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8888",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8888",
    }
    app_iter = app(environ, lambda status, headers, exc_info=None: None)
    try:
        for _ in app_iter:
            pass
    finally:
        if hasattr(app_iter, "close"):
            app_iter.close()


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(warm_up=True):
    """Serves until killed. `warm_up=False`: the zygote already ran the warm-up request."""
    fd = None
    if LISTEN_FD:
        try:
            fd = int(LISTEN_FD)
        except (ValueError, OSError) as exc:
            log("invalid FISSION_LISTEN_FD {!r}: {}".format(LISTEN_FD, exc))
            sys.exit(2)
    # Each instance compiles its function once; writing the bytecode next to the code would
    # only cost time (~0.7 ms on ext4) on every cold start, and in a sandbox /userfunc is
    # read-only anyway.
    sys.dont_write_bytecode = True
    if warm_up:
        _warm_up()
    try:
        server = make_server(HOST, PORT, fd)
    except OSError as exc:
        where = "fd {}".format(fd) if fd is not None else "{}:{}".format(HOST, PORT)
        log("cannot listen on {}: {}".format(where, exc))
        sys.exit(2)
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
