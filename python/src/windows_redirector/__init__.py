"""windows_redirector: redirect chosen processes' TCP and UDP traffic to a
local port of your program, and learn where each connection was going.

A ctypes binding of the windows-redirector C library (windows_redirector.dll
with WinDivert on Windows, libwindows_redirector.so with NFQUEUE on Linux).
The library is global to the process: one configuration, one running
redirector. So this module is a set of functions, not objects, plus a
context manager::

    import socket, windows_redirector as wr

    with wr.redirecting(8080, intercept=["curl"]):
        srv = socket.create_server(("", 8080), family=socket.AF_INET6, dualstack_ipv6=True)
        conn, _ = srv.accept()
        try:
            origin = wr.lookup(conn)    # Origin(destination=('198.18.0.10', 80), pid=..., ...)
        except wr.NotFound:             # not redirected: connected to the port directly
            conn.close()                # (from another machine, or another local process)
        else:
            upstream = socket.create_connection(origin.destination)
            ...

The app port is reachable by more than redirected traffic (on Windows the
proxy listens on the wildcard address behind an inbound firewall rule), so
serve only connections whose lookup succeeds.

Errors are RedirectorError subclasses, one per REDIRECTOR_E* code, each
with the library's own text (``e.code`` is the C code); they also derive
from the matching built-in (ConfigError is a ValueError, NotFound a
LookupError), so ``except ValueError`` works as a Python caller expects.

The native library is loaded on first use, not at import, from beside this
module first (the wheel for your platform carries it there:
libwindows_redirector.so on Linux, windows_redirector.dll on Windows), else
from where the caller says: set_library_path(path), else
$WINDOWS_REDIRECTOR_LIBRARY (a file, or the folder that holds it), else, on
Linux only, the system's library search path. library_path() says which
file was loaded; when none can be, the OSError names every place tried.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import contextlib
import dataclasses
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterator, List, NoReturn, Optional, Tuple, Type, Union

__all__ = [
    "TCP", "UDP", "OUTBOUND", "INBOUND", "EVENT_OPENED", "EVENT_CLOSED",
    "RedirectorError", "AlreadyRunning", "NotRunning", "NullArgument", "ConfigError", "NotUTF8",
    "InitError", "NotFound", "InvalidArgument", "EngineError", "NoEvent", "OutOfMemory",
    "Origin", "Event", "Address", "Config", "configure", "set_app_port", "set_windivert_path", "start", "stop",
    "running",
    "redirecting", "would_intercept", "lookup", "lookup_udp", "lookup_address", "next_event", "stats",
    "version", "strerror", "set_library_path", "library_path", "LIBRARY_ENV",
]

TCP = 6
UDP = 17
OUTBOUND = 0
INBOUND = 1
EVENT_OPENED = 1
EVENT_CLOSED = 2

# ---------------------------------------------------------------------------
# Errors


class RedirectorError(Exception):
    """A failure the library reported; ``code`` is its REDIRECTOR_E* code."""

    code: int = 0

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class AlreadyRunning(RedirectorError):
    """The redirector is already running (REDIRECTOR_EALREADY)."""
    code = -101


class NotRunning(RedirectorError):
    """The redirector is not running (REDIRECTOR_ENOTRUNNING)."""
    code = -102


class NullArgument(RedirectorError, ValueError):
    """A required argument was None (REDIRECTOR_ENULL)."""
    code = -103


class ConfigError(RedirectorError, ValueError):
    """The configuration is not valid; the text names the field (REDIRECTOR_ECONFIG)."""
    code = -104


class NotUTF8(RedirectorError, ValueError):
    """A text is not valid UTF-8 (REDIRECTOR_EUTF8)."""
    code = -105


class InitError(RedirectorError):
    """Could not start: WinDivert missing, not elevated, no app port... (REDIRECTOR_EINIT)."""
    code = -106


class NotFound(RedirectorError, LookupError):
    """No redirected connection matches (REDIRECTOR_ENOTFOUND)."""
    code = -107


class InvalidArgument(RedirectorError, ValueError):
    """An argument is out of range (REDIRECTOR_EINVAL)."""
    code = -108


class EngineError(RedirectorError):
    """The engine failed inside and was rebuilt; the call had no effect (REDIRECTOR_EENGINE)."""
    code = -109


class NoEvent(RedirectorError):
    """No event is waiting (REDIRECTOR_ENOEVENT); next_event returns None instead."""
    code = -110


class OutOfMemory(RedirectorError, MemoryError):
    """The library ran out of memory; the call had no effect (REDIRECTOR_ENOMEM)."""
    code = -111


_BY_CODE: dict[int, Type[RedirectorError]] = {c.code: c for c in (AlreadyRunning, NotRunning, NullArgument, ConfigError, NotUTF8,
                                 InitError, NotFound, InvalidArgument, EngineError, NoEvent, OutOfMemory)}

# ---------------------------------------------------------------------------
# The C structs (windows_redirector.h)


class _Endpoint(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("reserved", ctypes.c_uint8), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_uint8 * 16)]


class _Origin(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("protocol", ctypes.c_uint32), ("direction", ctypes.c_uint32),
                ("pid", ctypes.c_uint32), ("destination", _Endpoint), ("client", _Endpoint),
                ("peer", _Endpoint), ("app_port", ctypes.c_uint16), ("reserved", ctypes.c_uint16),
                ("flow_id", ctypes.c_uint32), ("bytes_up", ctypes.c_uint64), ("bytes_down", ctypes.c_uint64),
                ("process_path", ctypes.c_char * 1024)]


class _Event(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("type", ctypes.c_uint32), ("time_ms", ctypes.c_uint64),
                ("origin", _Origin)]


_STAT_FIELDS = ("packets", "rewritten", "passed", "held", "dropped", "malformed", "fragments", "flows_active",
                "flows_redirected", "flows_passed", "flows_expired", "table_full", "evictions", "hold_timeouts",
                "owner_facts", "owner_queries", "events_lost", "nat_conflicts", "bypassed", "lookups",
                "lookup_misses", "engine_restarts", "flow_capacity", "bytes_per_flow", "redirected_syn_unanswered",
                "redirected_syn_refused")


class _Stats(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("running", ctypes.c_uint32)] + \
               [(name, ctypes.c_uint64) for name in _STAT_FIELDS]


Address = Tuple[str, int]
"""(host, port), as the socket module gives it for IPv4 (IPv6: the host is
the address without brackets)."""

Config = Union[Mapping[str, Any], str, bytes, bytearray]
"""A configuration: a dict (turned into JSON), a JSON text, or UTF-8 bytes."""


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a redirected connection was going, and who opened it.

    Addresses are (host, port) tuples, as the socket module uses them.
    """
    destination: Address
    client: Address
    peer: Address
    pid: int
    process: str  # the executable's path ("" when unknown)
    protocol: str  # "tcp" or "udp"
    direction: str  # "outbound" or "inbound"
    app_port: int
    flow_id: int
    bytes_up: int
    bytes_down: int


@dataclasses.dataclass(frozen=True)
class Event:
    """A redirected connection opened or closed (its bytes final)."""
    type: str  # "opened" or "closed"
    time_ms: int  # the library's monotonic clock
    origin: Origin


# ---------------------------------------------------------------------------
# Loading


LIBRARY_ENV = "WINDOWS_REDIRECTOR_LIBRARY"
"""The environment variable naming the library (a file, or its folder) when it
is not beside this module."""


def _library_name(platform: str) -> str:
    return "windows_redirector.dll" if platform == "win32" else "libwindows_redirector.so"


def _file_of(path: str, name: str) -> str:
    """A library file, or the folder that holds it -> the file."""
    return os.path.join(path, name) if os.path.isdir(path) else path


def _candidates(platform: str, here: str, explicit: Optional[str], env: Optional[str],
                find_library: Callable[[str], Optional[str]]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Where the library is looked for, in order, as (path, what said so);
    and notes on the places that gave nothing to try.

    Beside the module first (a wheel carries it there), then
    set_library_path's, then $WINDOWS_REDIRECTOR_LIBRARY's; only when the
    caller named neither, on Linux the system's search path (a library
    installed with ``cmake --install`` and known to the dynamic loader). On
    Windows nothing else is searched: not the current folder, not PATH."""
    name = _library_name(platform)
    out = [(os.path.join(here, name), "beside the module")]
    notes = []
    for value, source in ((explicit, "set_library_path"), (env, "$" + LIBRARY_ENV)):
        if value:
            out.append((_file_of(value, name), source))
        else:
            notes.append(f"{source}: not {'called' if source == 'set_library_path' else 'set'}")
    if not explicit and not env and platform != "win32":
        found = find_library("windows_redirector")
        if found:
            out.append((found, "the system's library search path"))
        else:
            notes.append("the system's library search path: no libwindows_redirector")
    return out, notes


_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_explicit: Optional[str] = None
_load_lock = threading.Lock()


def _open(candidates: List[Tuple[str, str]], notes: List[str], name: str) -> Tuple[ctypes.CDLL, str]:
    """The first candidate that loads and has every function this module
    calls; else an OSError naming each place tried and why it failed."""
    tried = []
    for path, source in candidates:
        if os.path.dirname(path) and not os.path.isfile(path):
            tried.append(f"{path} ({source}): not there")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({source}): {e}")
            continue
        missing = _declare(lib)
        if missing:
            tried.append(f"{path} ({source}): lacks {', '.join(missing)} (an older library?)")
            continue
        return lib, path
    raise OSError(f"windows_redirector: could not load the native library {name}; tried " +
                  "; ".join(tried + notes) + ". Install the wheel for this platform (it carries the library), "
                  f"or say where the library is: windows_redirector.set_library_path(PATH) or {LIBRARY_ENV}=PATH "
                  "(the file, or the folder that holds it).")


def _load() -> ctypes.CDLL:
    global _lib, _lib_path
    with _load_lock:
        if _lib is not None:
            return _lib
        cands, notes = _candidates(sys.platform, os.path.dirname(os.path.abspath(__file__)), _explicit,
                                   os.environ.get(LIBRARY_ENV) or None, ctypes.util.find_library)
        _lib, _lib_path = _open(cands, notes, _library_name(sys.platform))
        return _lib


def set_library_path(path: Union[str, os.PathLike[str], None]) -> None:
    """Says where the native library is when it is not beside this module:
    the file, or the folder that holds it (a relative path is taken from the
    current folder now). A library beside the module (as the wheel installs
    it) is still used first. None forgets the path. Call it before the first
    use: once the library is loaded, naming another file is InvalidArgument."""
    global _explicit
    with _load_lock:
        if path is None or os.fspath(path) == "":
            _explicit = None
            return
        full = os.path.abspath(os.fspath(path))
        if _lib_path is not None:
            wanted = _file_of(full, _library_name(sys.platform))
            if not (os.path.exists(wanted) and os.path.samefile(wanted, _lib_path)):
                raise InvalidArgument(f"the library is already loaded from {_lib_path}: call set_library_path "
                                      "before the first use")
        _explicit = full


def library_path() -> str:
    """The file of the native library in use (loading it if it is not yet)."""
    _load()
    assert _lib_path is not None
    return _lib_path


def _signatures() -> dict[str, Tuple[Any, List[Any]]]:
    """The C functions this module calls: name -> (result type, argument types)."""
    i32, u16, u32 = ctypes.c_int32, ctypes.c_uint16, ctypes.c_uint32
    return {
        "initialize_global_config": (None, []),
        "start_redirector": (i32, []),
        "stop_redirector": (i32, []),
        "get_redirector_status": (i32, []),
        "set_redirector_config": (i32, [ctypes.c_char_p]),
        "redirector_set_app_port": (i32, [u16]),
        "redirector_lookup": (i32, [i32, ctypes.POINTER(_Endpoint), ctypes.POINTER(_Endpoint),
                                    ctypes.POINTER(_Origin)]),
        "redirector_next_event": (i32, [ctypes.POINTER(_Event), u32]),
        "redirector_get_stats": (i32, [ctypes.POINTER(_Stats)]),
        "redirector_would_intercept": (i32, [u32, ctypes.c_char_p]),
        "redirector_last_error": (i32, [ctypes.c_char_p, ctypes.c_size_t]),
        "redirector_last_error_code": (i32, []),
        "redirector_strerror": (ctypes.c_char_p, [i32]),
        "redirector_version": (ctypes.c_char_p, []),
        "redirector_set_windivert_path": (i32, [ctypes.c_char_p]),
        "redirector_debug_inject_fault": (i32, [i32]),
    }


def _declare(lib: ctypes.CDLL) -> List[str]:
    """Sets each function's C signature; returns the names the library lacks."""
    missing = []
    for name, (res, args) in _signatures().items():
        try:
            f = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        f.restype = res
        f.argtypes = args
    return missing


def _last_error() -> Tuple[int, str]:
    """This thread's last error: (code, text).

    The library's last error belongs to the calling thread, and a ctypes call
    runs on the Python thread that makes it: read right after a failed call,
    it is that call's own."""
    lib = _load()
    code = lib.redirector_last_error_code()
    n = lib.redirector_last_error(None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    lib.redirector_last_error(buf, len(buf))
    return code, buf.value.decode("utf-8", "replace")


def _raise() -> NoReturn:
    """Raises the error of the call that just failed on this thread. Its code
    also says which cause a seed function's -1/-2/-3 means."""
    code, text = _last_error()
    raise _BY_CODE.get(code, RedirectorError)(text, code)


# ---------------------------------------------------------------------------
# The API


def version() -> str:
    """The library's version, e.g. "0.1.0"."""
    v: bytes = _load().redirector_version()
    return v.decode()


def strerror(code: int) -> str:
    """The header's description of a REDIRECTOR_E* code."""
    text: bytes = _load().redirector_strerror(code)
    return text.decode()


def _text(value: Union[str, bytes, bytearray, None], what: str,
          nul_error: Optional[Type[RedirectorError]] = None) -> Optional[bytes]:
    """UTF-8 bytes for a C string (one NUL at the end, as C has it, is fine).
    A NUL inside would cut it short in C, so it is refused: nul_error
    (default InvalidArgument)."""
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate
            raise NotUTF8(f"{what} is not valid UTF-8: {e}") from None
    if isinstance(value, (bytes, bytearray)) and value.endswith(b"\0"):
        value = bytes(value[:-1])
    if isinstance(value, (bytes, bytearray)) and b"\0" in value:
        raise (nul_error or InvalidArgument)(f"{what} holds a NUL byte at offset {value.index(0)}")
    return None if value is None else bytes(value)


def configure(config: Optional[Config]) -> None:
    """Replaces the configuration: a dict (turned into JSON), a JSON str, or
    UTF-8 bytes. Fields: see set_redirector_config in windows_redirector.h,
    e.g. {"intercept_pids": [1234], "intercept": ["curl", "!5678"],
    "protocols": ["tcp"]}. A rejected configuration leaves the previous one in
    force and raises ConfigError naming the field, NotUTF8 or NullArgument."""
    if isinstance(config, Mapping):
        config = json.dumps(dict(config), ensure_ascii=False)
    data = _text(config, "the configuration", ConfigError)
    if _load().set_redirector_config(data) != 0:
        _raise()


def set_app_port(port: int) -> None:
    """The port your proxy listens on; redirected traffic arrives there. 0 unsets it.

    While running, InitError if the capture could not be set up for the port
    (Linux: iptables, or more than 16 ports in one run); the old port stays.
    """
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"port {port} is out of range")
    if _load().redirector_set_app_port(port) != 0:
        _raise()


def set_windivert_path(directory: Union[str, bytes, None]) -> None:
    """Windows: the folder of WinDivert.dll and WinDivert64.sys (None: the default search)."""
    data = _text(directory, "the folder") if directory else None
    if _load().redirector_set_windivert_path(data) != 0:
        _raise()


def start() -> None:
    """Starts redirecting. Raises AlreadyRunning, or InitError with the reason
    ("WinDivert driver not found", "Access denied", no app port, ...)."""
    if _load().start_redirector() != 0:
        _raise()


def stop() -> None:
    """Stops redirecting; traffic flows directly again. Raises NotRunning."""
    if _load().stop_redirector() != 0:
        _raise()


def running() -> bool:
    """True while the redirector runs."""
    return bool(_load().get_redirector_status() == 1)


@contextlib.contextmanager
def redirecting(app_port: int, config: Optional[Config] = None, **fields: Any) -> Iterator[None]:
    """Configures (config dict, or keyword fields), starts, and stops at the end."""
    configure(config if config is not None else fields)
    set_app_port(app_port)
    start()
    try:
        yield
    finally:
        stop()


def would_intercept(pid: int, process_path: Union[str, bytes, None] = None) -> bool:
    """Would this process be intercepted under the configuration in force?"""
    if not 0 <= pid <= 0xFFFFFFFF:
        raise InvalidArgument(f"pid {pid} is out of range")
    data = _text(process_path, "the path") if process_path is not None else None
    rc: int = _load().redirector_would_intercept(pid, data)
    if rc < 0:
        _raise()
    return rc == 1


def _endpoint(address: Tuple[Any, ...]) -> _Endpoint:
    """A (host, port[, flowinfo, scope]) tuple -> _Endpoint (the library
    understands IPv4-mapped addresses)."""
    host, port = address[0], address[1]
    ip = ipaddress.ip_address(host.split("%")[0] if isinstance(host, str) else host)
    ep = _Endpoint()
    ep.family = ip.version
    ep.port = port
    packed = ip.packed
    for i, b in enumerate(packed):
        ep.addr[i] = b
    return ep


def _address(ep: _Endpoint) -> Address:
    if ep.family == 4:
        return (str(ipaddress.IPv4Address(bytes(ep.addr[:4]))), ep.port)
    if ep.family == 6:
        return (str(ipaddress.IPv6Address(bytes(ep.addr))), ep.port)
    return ("", 0)


def _origin(o: _Origin) -> Origin:
    return Origin(destination=_address(o.destination), client=_address(o.client), peer=_address(o.peer),
                  pid=o.pid, process=o.process_path.decode("utf-8", "replace"),
                  protocol={TCP: "tcp", UDP: "udp"}.get(o.protocol, str(o.protocol)),
                  direction={OUTBOUND: "outbound", INBOUND: "inbound"}.get(o.direction, str(o.direction)),
                  app_port=o.app_port, flow_id=o.flow_id, bytes_up=o.bytes_up, bytes_down=o.bytes_down)


def lookup_address(protocol: Union[int, str], local: Tuple[Any, ...], peer: Tuple[Any, ...]) -> Origin:
    """Where was the connection from peer to local going? protocol is TCP or
    UDP (or "tcp"/"udp"); local and peer are (host, port) tuples; an
    unspecified local host means any. Raises NotFound, NotRunning."""
    if isinstance(protocol, str):
        if protocol not in ("tcp", "udp"):
            raise InvalidArgument(f"protocol {protocol!r}: not tcp or udp")
        protocol = TCP if protocol == "tcp" else UDP
    p, l = _endpoint(peer), _endpoint(local)
    out = _Origin()
    out.size = ctypes.sizeof(_Origin)
    if _load().redirector_lookup(protocol, ctypes.byref(p), ctypes.byref(l), ctypes.byref(out)) != 0:
        _raise()
    return _origin(out)


def lookup(sock: socket.socket) -> Origin:
    """Where was this accepted TCP connection (or connected UDP socket)
    going? Uses getsockname and getpeername."""
    kind = int(sock.type) & ~getattr(socket, "SOCK_NONBLOCK", 0) & ~getattr(socket, "SOCK_CLOEXEC", 0)
    protocol = {int(socket.SOCK_STREAM): TCP, int(socket.SOCK_DGRAM): UDP}.get(kind)
    if protocol is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise InvalidArgument(f"not a TCP or UDP socket over IP: {sock!r}")
    try:
        peer = sock.getpeername()
    except OSError as e:
        raise InvalidArgument(f"the socket has no peer ({e.strerror}): for datagrams use lookup_udp") from None
    return lookup_address(protocol, sock.getsockname(), peer)


def lookup_udp(local: Tuple[Any, ...], peer: Tuple[Any, ...]) -> Origin:
    """Where was a datagram going? local: the proxy socket's getsockname();
    peer: the sender from recvfrom."""
    return lookup_address(UDP, local, peer)


# Longest single wait inside the library: Ctrl-C is seen between waits.
_WAIT_SLICE = 0.2


def next_event(timeout: Optional[float] = None) -> Optional[Event]:
    """The oldest connection event, waiting up to timeout seconds (None:
    forever, 0: not at all); None when none came. Raises NotRunning.

    It waits inside the library, so an event is returned as soon as it
    comes, in slices of at most 0.2 s (Ctrl-C is seen between them)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ev = _Event()
    while True:
        left = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
        ev.size = ctypes.sizeof(_Event)
        rc = _load().redirector_next_event(ctypes.byref(ev), max(0, int(left * 1000)))
        if rc == 0:
            return Event(type={EVENT_OPENED: "opened", EVENT_CLOSED: "closed"}.get(ev.type, str(ev.type)),
                         time_ms=ev.time_ms, origin=_origin(ev.origin))
        if rc != NoEvent.code:
            _raise()
        if deadline is not None and time.monotonic() >= deadline:
            return None


def stats() -> dict[str, Any]:
    """The library's counters, a dict (see redirector_stats in the header)."""
    out = _Stats()
    out.size = ctypes.sizeof(_Stats)
    if _load().redirector_get_stats(ctypes.byref(out)) != 0:
        _raise()
    d = {name: getattr(out, name) for name in _STAT_FIELDS}
    d["running"] = bool(out.running)
    return d
