"""Tests of the windows_redirector package as installed (pip install of the
wheel into a virtual environment; see python/README.md): the ABI's codes as
Python exceptions, the struct layouts, lookups, and (Linux, root) a real
redirected connection in network namespaces of its own.

They import the installed package, never python/src: run them from a
virtual environment the wheel was installed into (npm test's python-pkg
suite makes a fresh one)."""
import ctypes
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import unittest
from importlib import metadata

import windows_redirector as wr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")  # the checkout: the header and test/csharp/abi_layout.c


class Installed(unittest.TestCase):
    """The package and its native library come from the virtual environment
    the wheel was installed into, not from the checkout."""

    def test_the_package_is_the_installed_one(self):
        self.assertNotEqual(sys.prefix, sys.base_prefix, "not run from a virtual environment")
        site = os.path.realpath(sysconfig.get_paths()["platlib"])
        here = os.path.realpath(os.path.dirname(wr.__file__))
        self.assertEqual(here, os.path.join(site, "windows_redirector"))
        files = {str(f) for f in metadata.files("windows-redirector") or []}
        self.assertIn("windows_redirector/py.typed", files)
        self.assertIn("windows_redirector/libwindows_redirector.so", files)

    def test_the_library_is_the_one_beside_the_module(self):
        self.assertFalse(os.environ.get(wr.LIBRARY_ENV), f"{wr.LIBRARY_ENV} is set: the test proves nothing")
        beside = os.path.join(os.path.dirname(os.path.abspath(wr.__file__)), "libwindows_redirector.so")
        self.assertEqual(wr.library_path(), beside)
        with open("/proc/self/maps") as maps:
            mapped = {line.split(maxsplit=5)[-1].strip() for line in maps if "libwindows_redirector" in line}
        self.assertEqual(mapped, {os.path.realpath(beside)})

    def test_versions_agree(self):
        # The wheel's version and the library's both come from package.json.
        with open(os.path.join(ROOT, "package.json")) as f:
            want = json.load(f)["version"]
        self.assertEqual(metadata.version("windows-redirector"), want)
        self.assertEqual(wr.version(), want)

    def test_set_library_path_after_loading(self):
        wr.library_path()
        wr.set_library_path(os.path.dirname(wr.library_path()))  # the same file: fine
        wr.set_library_path(wr.library_path())
        with self.assertRaisesRegex(wr.InvalidArgument, "already loaded from .*libwindows_redirector.so"):
            wr.set_library_path(os.path.join(ROOT, "build", "linux", "libwindows_redirector.so"))
        wr.set_library_path(None)


class Errors(unittest.TestCase):
    def test_classes_match_the_header(self):
        for cls in (wr.AlreadyRunning, wr.NotRunning, wr.NullArgument, wr.ConfigError, wr.NotUTF8, wr.InitError,
                    wr.NotFound, wr.InvalidArgument, wr.EngineError, wr.NoEvent, wr.OutOfMemory):
            self.assertTrue(issubclass(cls, wr.RedirectorError))
            self.assertNotEqual(wr.strerror(cls.code), "unknown error code", cls)
        self.assertEqual(wr.strerror(-101), "the redirector is already running")
        self.assertEqual(wr.strerror(12345), "unknown error code")
        self.assertTrue(issubclass(wr.ConfigError, ValueError))
        self.assertTrue(issubclass(wr.NotFound, LookupError))
        self.assertTrue(issubclass(wr.OutOfMemory, MemoryError))
        self.assertEqual(sorted(wr._BY_CODE), list(range(-111, -100)))

    def test_struct_sizes_equal_the_library(self):
        # The library's EINVAL text tells the size it expects.
        lib = wr._load()
        for struct, call in (
            (wr._Origin, lambda o: lib.redirector_lookup(6, ctypes.byref(wr._Endpoint()), ctypes.byref(wr._Endpoint()),
                                                         ctypes.byref(o))),
            (wr._Event, lambda e: lib.redirector_next_event(ctypes.byref(e), 0)),
            (wr._Stats, lambda s: lib.redirector_get_stats(ctypes.byref(s))),
        ):
            v = struct()
            v.size = ctypes.sizeof(struct) - 1
            self.assertEqual(call(v), wr.InvalidArgument.code)
            code, text = wr._last_error()
            self.assertEqual(code, wr.InvalidArgument.code)
            self.assertIn(f"({ctypes.sizeof(struct)})", text, struct.__name__)

    @unittest.skipUnless(shutil.which("gcc"), "needs gcc to read the header's layout")
    def test_struct_layout_equals_the_header(self):
        # test/csharp/abi_layout.c prints every field's offset as C sees it.
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "abi_layout")
            subprocess.run(["gcc", "-I", os.path.join(ROOT, "include"), "-o", exe,
                            os.path.join(ROOT, "test", "csharp", "abi_layout.c")], check=True)
            lines = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines()
        structs = {"redirector_endpoint": wr._Endpoint, "redirector_origin": wr._Origin,
                   "redirector_event": wr._Event, "redirector_stats": wr._Stats}
        for line in lines:
            name, *want = line.split()
            struct, _, field = name.partition(".")
            if field:
                f = getattr(structs[struct], field)
                self.assertEqual([f.offset, f.size], [int(w) for w in want], name)
            else:
                self.assertEqual(ctypes.sizeof(structs[struct]), int(want[0]), name)
        self.assertGreater(len(lines), 20)

    def test_errors_of_concurrent_threads(self):
        # The last error belongs to the thread: threads failing in different
        # ways at once, and other code failing meanwhile, each get their own
        # call's error and text.
        wr.configure({"intercept_pids": [4204321]})
        calls = (
            (lambda: wr.configure({"max_flows": 8}), wr.ConfigError, "set_redirector_config: max_flows"),
            (lambda: wr.configure({"intercept_pids": [1, -2]}), wr.ConfigError,
             "set_redirector_config: intercept_pids[1]"),
            (lambda: wr.would_intercept(1, b"/usr/bin/\xff"), wr.NotUTF8,
             "redirector_would_intercept: process_path is not valid UTF-8"),
            (wr.stop, wr.NotRunning, "stop_redirector: the redirector is not running"),
            (lambda: wr.set_windivert_path(b"C:\\\xff"), wr.NotUTF8, "redirector_set_windivert_path: the path"),
        )
        wrong = []
        lib = wr._load()

        def fail_elsewhere():  # other code in the process, calling the library itself
            for _ in range(600):
                lib.set_redirector_config(b"{")

        def caller(call, cls, text):
            for _ in range(300):
                try:
                    call()
                    wrong.append(f"{text}: no error")
                    return
                except wr.RedirectorError as e:
                    if type(e) is not cls or e.code != cls.code or not str(e).startswith(text):
                        wrong.append(f"{text}: got {type(e).__name__} {e.code} {e}")
                        return

        threads = [threading.Thread(target=caller, args=c) for c in calls]
        threads += [threading.Thread(target=fail_elsewhere) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(wrong, [])
        self.assertTrue(wr.would_intercept(4204321))


class Config(unittest.TestCase):
    def test_errors(self):
        # PIDs above 4194304 (Linux's PID_MAX_LIMIT) are never this process's own.
        wr.configure({"intercept_pids": [4204321]})
        with self.assertRaises(wr.ConfigError) as cm:
            wr.configure({"max_flows": 8})
        self.assertIn("max_flows", str(cm.exception))
        self.assertEqual(cm.exception.code, -104)
        with self.assertRaisesRegex(ValueError, r"intercept_pids\[1\]"):
            wr.configure({"intercept_pids": [1, -2]})
        with self.assertRaisesRegex(wr.ConfigError, "end of input"):
            wr.configure('{"intercept_pids": [1,')
        with self.assertRaises(wr.NotUTF8):
            wr.configure(b'{"description": "\xff"}')
        with self.assertRaises(wr.NotUTF8):
            wr.configure({"description": "\ud800"})
        with self.assertRaises(wr.NullArgument):
            wr.configure(None)
        # A NUL would cut the text short in C: the valid JSON before it must not pass.
        with self.assertRaisesRegex(wr.ConfigError, "NUL byte at offset 29"):
            wr.configure('{"intercept_pids": [4209999]}\0{')
        self.assertFalse(wr.would_intercept(4209999))
        wr.configure(b'{"intercept_pids": [4209998]}\0')  # a C string's one NUL at the end is fine
        self.assertTrue(wr.would_intercept(4209998))
        wr.configure({"intercept_pids": [4204321]})
        self.assertTrue(wr.would_intercept(4204321))  # the one before stays in force

    def test_would_intercept(self):
        wr.configure({"intercept_pids": [4201111], "intercept": ["curl", "!4202222"]})
        self.assertTrue(wr.would_intercept(4201111))
        self.assertTrue(wr.would_intercept(4203333, "/usr/bin/curl"))
        self.assertFalse(wr.would_intercept(4202222, "/usr/bin/curl"))
        self.assertFalse(wr.would_intercept(os.getpid(), "/usr/bin/curl"))
        with self.assertRaises(wr.NotUTF8):
            wr.would_intercept(1, b"/usr/bin/\xff")
        for pid in (-1, 2**32 + 4201111):  # not wrapped to another PID
            with self.assertRaisesRegex(wr.InvalidArgument, "out of range"):
                wr.would_intercept(pid)
        with self.assertRaisesRegex(wr.InvalidArgument, "NUL byte"):
            wr.would_intercept(4203333, "/usr/bin/curl\0/x")

    def test_engine_failure(self):
        wr.configure({"intercept_pids": [5555]})
        self.assertEqual(wr._load().redirector_debug_inject_fault(1), 0)
        with self.assertRaises(wr.EngineError):
            wr.configure({"intercept_pids": [6666]})
        self.assertTrue(wr.would_intercept(5555))

    def test_out_of_memory(self):
        # REDIRECTOR_FAULT_MEMORY (4): the library's next copy of a text fails.
        wr.configure({"intercept_pids": [5555]})
        self.assertEqual(wr._load().redirector_debug_inject_fault(4), 0)
        with self.assertRaisesRegex(wr.OutOfMemory, "set_redirector_config: out of memory") as cm:
            wr.configure({"intercept_pids": [6666]})
        self.assertEqual(cm.exception.code, -111)
        self.assertTrue(wr.would_intercept(5555))
        self.assertFalse(wr.would_intercept(6666))

    def test_windivert_path(self):
        wr.set_windivert_path("C:\\WinDivert")
        wr.set_windivert_path(None)
        with self.assertRaises(wr.NotUTF8):
            wr.set_windivert_path(b"C:\\\xff")
        with self.assertRaisesRegex(wr.InvalidArgument, "NUL byte"):
            wr.set_windivert_path("C:\\Win\0Divert")


class Running(unittest.TestCase):
    def tearDown(self):
        if wr.running():
            wr.stop()

    def test_start_stop(self):
        wr.set_app_port(0)
        with self.assertRaisesRegex(wr.InitError, "update_app_port"):
            wr.start()
        wr.set_app_port(18180)
        with self.assertRaises(wr.NotRunning):
            wr.stop()
        wr.start()
        self.assertTrue(wr.running())
        with self.assertRaisesRegex(wr.AlreadyRunning, "already running"):
            wr.start()
        wr.stop()
        self.assertFalse(wr.running())
        with wr.redirecting(18181, intercept_pids=[4201234]):
            self.assertTrue(wr.running())
            self.assertTrue(wr.stats()["running"])
        self.assertFalse(wr.running())

    def test_lookups_of_connections_not_redirected(self):
        with self.assertRaises(wr.NotRunning):
            wr.lookup_address("tcp", ("10.0.0.1", 1), ("198.18.0.10", 2))
        srv = socket.create_server(("127.0.0.1", 0))
        with srv, wr.redirecting(srv.getsockname()[1], max_flows=1024):
            c = socket.create_connection(srv.getsockname())
            s, _ = srv.accept()
            with c, s:
                with self.assertRaisesRegex(wr.NotFound, "no redirected TCP"):
                    wr.lookup(s)
            u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            with u:
                with self.assertRaisesRegex(LookupError, "UDP"):
                    wr.lookup_udp(("::", 18182), ("::ffff:198.18.0.10", 53))
                with self.assertRaisesRegex(wr.InvalidArgument, "lookup_udp"):
                    wr.lookup(u)  # not connected: no peer to look up
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix, \
                    self.assertRaisesRegex(wr.InvalidArgument, "not a TCP or UDP socket"):
                wr.lookup(unix)
        st = wr.stats()
        self.assertEqual(st["flow_capacity"], 1024)
        self.assertGreaterEqual(st["lookup_misses"], 2)

    def test_events(self):
        with self.assertRaises(wr.NotRunning):
            wr.next_event(0)
        with wr.redirecting(18183):
            self.assertIsNone(wr.next_event(0.05))


def _remove_stale_namespaces():
    """Deletes the namespaces of an earlier run that was killed (its PID is gone)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        m = re.match(r"wrp[cs](\d+)\b", line)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            subprocess.run(["ip", "netns", "del", line.split()[0]], capture_output=True)


def _root_with_tools():
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("ip")


class EndToEnd(unittest.TestCase):
    """A real client process, intercepted by PID, redirected to a Python
    proxy in network namespaces of its own (Linux, root); a direct connection
    to the proxy's port from the other namespace is closed unserved."""

    results = None

    @classmethod
    def setUpClass(cls):
        if not _root_with_tools():
            raise unittest.SkipTest("needs root and iproute2 on Linux")
        _remove_stale_namespaces()
        cls.ns = (f"wrpc{os.getpid()}", f"wrps{os.getpid()}")
        c, s = cls.ns
        cls.server = None
        try:
            for cmd in (
                ["ip", "netns", "add", c], ["ip", "netns", "add", s],
                ["ip", "link", "add", c, "netns", c, "type", "veth", "peer", "name", s, "netns", s],
                ["ip", "-n", c, "link", "set", "lo", "up"], ["ip", "-n", s, "link", "set", "lo", "up"],
                ["ip", "-n", c, "addr", "add", "198.19.253.1/30", "dev", c],
                ["ip", "-n", s, "addr", "add", "198.19.253.2/30", "dev", s],
                ["ip", "-n", c, "-6", "addr", "add", "fd00:198:19:1::1/64", "dev", c, "nodad"],
                ["ip", "-n", s, "-6", "addr", "add", "fd00:198:19:1::2/64", "dev", s, "nodad"],
                ["ip", "-n", s, "addr", "add", "198.18.1.10/32", "dev", "lo"],
                ["ip", "-n", s, "-6", "addr", "add", "fd00:198:18:1::10/128", "dev", "lo"],
                ["ip", "-n", c, "link", "set", c, "up"], ["ip", "-n", s, "link", "set", s, "up"],
                ["ip", "-n", c, "route", "add", "198.18.1.0/24", "via", "198.19.253.2"],
                ["ip", "-n", c, "-6", "route", "add", "fd00:198:18:1::/64", "via", "fd00:198:19:1::2"],
            ):
                subprocess.run(cmd, check=True, capture_output=True)
            roles = os.path.join(HERE, "e2e_roles.py")
            cls.server = subprocess.Popen(["ip", "netns", "exec", s, sys.executable, roles, "server", "198.18.1.10",
                                           "fd00:198:18:1::10"], stdout=subprocess.PIPE, text=True)
            # Bounded: a server that hangs before "ready" fails here, not at the suite's limit.
            ready, _, _ = select.select([cls.server.stdout], [], [], 30)
            line = cls.server.stdout.readline().strip() if ready else "(nothing within 30 s)"
            if line != "ready":
                raise RuntimeError(f"the server did not start: {line!r}")
            run = subprocess.run(["ip", "netns", "exec", c, sys.executable, roles, "proxy", "198.18.1.10",
                                  "fd00:198:18:1::10", s, "198.19.253.1", "fd00:198:19:1::1"],
                                 capture_output=True, text=True, timeout=300)
            cls.output = run.stdout + run.stderr
            cls.results = {}
            for line in run.stdout.splitlines():
                if line.startswith("E2E "):
                    r = json.loads(line[4:])
                    cls.results[r["check"]] = r
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            cls.server.kill()
            cls.server.wait()
            cls.server.stdout.close()
        for ns in cls.ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def check(self, name):
        r = self.results.get(name)
        if r is None:
            self.fail(f"the proxy scenario did not report {name}:\n{self.output}")
        self.assertTrue(r["ok"], r["detail"])

    def test_tcp4_by_pid(self):
        self.check("tcp4_by_pid")

    def test_tcp6_by_pid(self):
        self.check("tcp6_by_pid")

    def test_udp4_by_pid(self):
        self.check("udp4_by_pid")

    def test_direct_from_another_machine_refused(self):
        self.check("direct_from_another_machine_refused")


class Version(unittest.TestCase):
    def test_version(self):
        self.assertRegex(wr.version(), r"^\d+\.\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
