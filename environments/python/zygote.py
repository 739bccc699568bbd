"""fission-rs Python zygote: one pre-initialized interpreter that forks runtime instances.

The executor starts this once per server (``/usr/bin/python3 -I -S zygote.py``) with a
SOCK_SEQPACKET control socket on fd 3 (``FISSION_ZYGOTE_FD``).  It imports the loader
(server.py: Flask, werkzeug and the stdlib modules they use), runs the warm-up request,
freezes the garbage collector (so that refcount and GC-header writes in children do not
dirty the shared pages) and then only ever forks.  It never imports or runs user code.

A spawn request is a JSON message with file descriptors attached (SCM_RIGHTS), named in
order by its ``fds`` list:

* ``listen`` (required) — the instance's bound, listening socket, becomes fd 3;
* ``stdout``/``stderr`` (required) — pipes to the executor's log pumps;
* ``net``, ``user``, ``mnt``, ``ipc``, ``uts``, ``cgroup``, ``pid`` — the namespaces of a
  sandbox slot (its holder process), joined before anything of the user is loaded;
* ``cgroup_procs`` (repeatable) — the slot's ``cgroup.procs`` files, joined first;
* ``seccomp`` (repeatable) — compiled ``struct sock_filter`` programs, installed last.

Without namespace descriptors (a zygote for unsandboxed instances, and the loader's test
suite) the child only gets its own descriptors and environment.

Answers: ``{"id": N, "pid": P}`` or ``{"id": N, "error": "..."}``; and, whenever a child
ends, ``{"exit": P, "code": C}`` or ``{"exit": P, "signal": S}``.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# server.py reads its settings at import; the zygote's own are irrelevant (each child
# re-reads its instance's with server.configure()).
_ARGV = sys.argv
sys.argv = [os.path.join(_HERE, "server.py")]
import server  # noqa: E402  (Flask and the loader, imported once for every child)

sys.argv = _ARGV

import ctypes  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NS_GET_USERNS = 0xB701
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
CAP_SETGID = 6
CAP_SYS_ADMIN = 21
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MAX_FDS = 32
MAX_MESSAGE = 256 * 1024
# Exit code of a child whose confinement failed (nothing of the user ran).
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "{}: {}".format(what, os.strerror(e)))


def _prctl(option, arg2=0, what="prctl"):
    _check(_libc.prctl(option, arg2, 0, 0, 0), what)


def _setns(fd, nstype, what):
    _check(_libc.setns(fd, nstype), "setns " + what)


def _capset(caps):
    """Effective and permitted sets to exactly `caps` (a list of numbers), inheritable empty."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for cap in caps:
        data[cap // 32].effective |= 1 << (cap % 32)
        data[cap // 32].permitted |= 1 << (cap % 32)
    nr = 126 if os.uname().machine == "x86_64" else 91  # capset: x86-64, else the generic table
    _check(_libc.syscall(nr, ctypes.byref(header), ctypes.byref(data)), "capset")


def _cap_last_cap():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


CAP_LAST_CAP = _cap_last_cap()


def _drop_bounding_set(keep=()):
    for cap in range(CAP_LAST_CAP + 1):
        if cap not in keep:
            _prctl(PR_CAPBSET_DROP, cap, "drop capability {} from the bounding set".format(cap))


def _install_seccomp(program):
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "seccomp program of {} bytes".format(len(program)))
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    rc = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)
    _check(rc, "install seccomp filter")


def _read_all(fd):
    chunks = []
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _log(msg):
    sys.stderr.write("zygote: " + msg.rstrip("\n") + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# The child: confine, then become a runtime instance
# ---------------------------------------------------------------------------


def _confine(req, fds):
    """Everything between fork and the loader's main loop, in the order the sandbox's own
    slots are built. Runs as root in the zygote's namespaces on entry; leaves a process with
    no capabilities, the slot's uid, namespaces, cgroups and seccomp filters."""
    named = fds
    # Read the filters while every descriptor is still at hand.
    programs = [_read_all(fd) for fd in named.get("seccomp", [])]
    # Supplementary groups are host groups (root's): drop them while still in the host's user
    # namespace, where setgroups is allowed (and needed: a sandboxed zygote runs as root).
    if os.geteuid() == 0:
        os.setgroups([])
    for fd in named.get("cgroup_procs", []):
        os.write(fd, b"0")
    if "net" in named:
        _setns(named["net"][0], CLONE_NEWNET, "net")
    if "mnt" in named:
        # The slot's mount namespace belongs to the user namespace bubblewrap made first; the
        # runtime runs in a nested one (--disable-userns). Join the owner, then everything it
        # owns, then the runtime's own user namespace.
        owner = fcntl.ioctl(named["mnt"][0], NS_GET_USERNS)
        _setns(owner, CLONE_NEWUSER, "user (owner)")
        _setns(named["mnt"][0], CLONE_NEWNS, "mnt")
        for name, flag in (("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("cgroup", CLONE_NEWCGROUP)):
            if name in named:
                _setns(named[name][0], flag, name)
        if "user" in named and os.fstat(named["user"][0]).st_ino != os.fstat(owner).st_ino:
            _setns(named["user"][0], CLONE_NEWUSER, "user")
        os.close(owner)
    os.chdir(req.get("cwd") or "/")
    # Descriptors: 0 /dev/null, 1 and 2 the log pipes, 3 the listener, nothing else.
    null = os.open("/dev/null", os.O_RDWR)
    listen = os.dup(named["listen"][0])
    os.dup2(null, 0)
    os.dup2(named["stdout"][0], 1)
    os.dup2(named["stderr"][0], 2)
    os.dup2(listen, 3)
    os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    if "mnt" in named or "user" in named:
        uid = int(req.get("uid", 1000))
        gid = int(req.get("gid", uid))
        _drop_bounding_set()
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # A uid change leaves the inheritable and ambient sets; an unsandboxed child (test mode,
    # same uid as the zygote) loses its capabilities here too.
    _capset([])
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clear ambient capabilities")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
    # As after an exec by its own uid: /proc/self belongs to the process (no core dumps of the
    # zygote's root-owned state are possible: it holds no secrets, only the loader).
    _prctl(PR_SET_DUMPABLE, 1, "set dumpable")
    for program in programs:
        _install_seccomp(program)


def _become_instance(req):
    """Environment, arguments and import paths of the instance; then the loader's main loop."""
    os.environ.clear()
    for k, v in req.get("env", []):
        os.environ[k] = v
    sys.argv = [os.path.join(_HERE, "server.py")] + list(req.get("args", []))
    # Inside a slot the runtimes sit elsewhere than on the host (e.g. /opt/fission/environments).
    for host, inside in req.get("path_map", []):
        sys.path = [inside + p[len(host) :] if p == host or p.startswith(host + "/") else p for p in sys.path]
        sys.argv[0] = sys.argv[0].replace(host, inside, 1) if sys.argv[0].startswith(host) else sys.argv[0]
        # Only the finders of remapped entries go: clearing the whole cache (or
        # importlib.invalidate_caches(), which also imports importlib.metadata) frees objects
        # all over the shared heap, copying ~1.5 MiB of it into every child.
        for p in [p for p in sys.path_importer_cache if p == host or p.startswith(host + "/")]:
            del sys.path_importer_cache[p]
    server.configure()
    server.main(warm_up=False)


def _child(req, fds):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _prctl(PR_SET_PDEATHSIG, 0, "clear parent-death signal")
    code = 0
    try:
        try:
            _confine(req, fds)
        except BaseException as exc:  # noqa: BLE001 - any failure: report and never go on
            err = fds.get("stderr", [2])[0]
            os.write(err, "zygote: cannot confine instance {}: {}\n".format(req.get("id"), exc).encode())
            os._exit(SETUP_FAILED)
        _become_instance(req)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the loader's main loop ended with an error
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---------------------------------------------------------------------------
# The zygote's loop
# ---------------------------------------------------------------------------


def _spawn(req, fds, own_pidns):
    named = {}
    names = req.get("fds", [])
    if len(names) != len(fds):
        raise ValueError("{} descriptors named, {} received".format(len(names), len(fds)))
    for name, fd in zip(names, fds):
        named.setdefault(name, []).append(fd)
    for required in ("listen", "stdout", "stderr"):
        if required not in named:
            raise ValueError("no {} descriptor".format(required))
    sys.stdout.flush()
    sys.stderr.flush()
    # The child must be born in the slot's pid namespace (its pid 1 is the slot's init, which
    # takes the whole namespace down with it), yet stay our child so we can report its exit.
    if "pid" in named:
        _setns(named["pid"][0], CLONE_NEWPID, "pid")
    pid = -1
    try:
        pid = os.fork()
    finally:
        # (The child is in the slot's namespace for good: only the zygote goes back.)
        if pid != 0 and "pid" in named and own_pidns is not None:
            try:
                _setns(own_pidns, CLONE_NEWPID, "pid (back)")
            except OSError as exc:
                # Every later child would land in that slot: stop rather than go on.
                _log("cannot return to our own pid namespace: {}".format(exc))
                os._exit(1)
    if pid == 0:
        _child(req, named)
    return pid


def _reap(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        msg = {"exit": pid}
        if os.WIFSIGNALED(status):
            msg["signal"] = os.WTERMSIG(status)
        else:
            msg["code"] = os.waitstatus_to_exitcode(status)
        _send(sock, msg)


def _send(sock, msg):
    try:
        sock.send(json.dumps(msg).encode())
    except BrokenPipeError:
        os._exit(0)


def _confine_self():
    """What the zygote keeps: CAP_SYS_ADMIN (setns into a slot's network, pid and user
    namespaces) and CAP_SETGID (a child drops root's groups before it leaves the host's user
    namespace); nothing else, no way to regain more (no_new_privs), and it dies with the
    server."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "set parent-death signal")
    if os.geteuid() != 0:
        _prctl(PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")
        return
    keep = (CAP_SETGID, CAP_SYS_ADMIN)
    _drop_bounding_set(keep)
    _capset(list(keep))
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "set no_new_privs")


def main():
    fd = int(os.environ.get("FISSION_ZYGOTE_FD") or 3)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    try:
        own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        own_pidns = None
    _confine_self()
    if os.environ.get("FISSION_ZYGOTE_SECCOMP"):
        # The server's first message: our own filters (the slots' deny program without setns).
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
        if not data or json.loads(data).get("op") != "confine" or not fds:
            _log("expected the seccomp programs first")
            sys.exit(2)
        for fd in fds:
            _install_seccomp(_read_all(fd))
            os.close(fd)
    sys.dont_write_bytecode = True
    server._warm_up()
    # Everything allocated so far is shared with every child; keep the collector off it.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(sock, {"ready": os.getpid()})
    _log("ready (pid {})".format(os.getpid()))
    while True:
        try:
            readable, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            _reap(sock)
        if sock not in readable:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
        except InterruptedError:
            continue
        except ConnectionResetError:
            data, fds = b"", []
        if not data:
            # The server closed its end: it is gone or shutting down.
            return
        req = {}
        try:
            req = json.loads(data)
            pid = _spawn(req, fds, own_pidns)
            _send(sock, {"id": req.get("id"), "pid": pid})
        except Exception as exc:  # noqa: BLE001 - a bad request fails that request only
            _send(sock, {"id": req.get("id") if isinstance(req, dict) else None, "error": str(exc)})
        finally:
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
        _reap(sock)


if __name__ == "__main__":
    main()
