"""The wheels as files (both platforms), and how the package finds its
native library: on Windows with the platform faked, since no Windows Python
runs here (the wheel's DLL itself is the one the C and wine suites test).

The wheels are named by $WR_WHEEL_LINUX and $WR_WHEEL_WINDOWS (npm test's
python-pkg suite sets them to build/wheel.ts's output)."""
import base64
import csv
import email.parser
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import unittest
import zipfile
from importlib import metadata
from unittest import mock

import windows_redirector as wr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
LIBRARIES = {"linux_x86_64": ("libwindows_redirector.so", os.path.join(ROOT, "build", "linux")),
             "win_amd64": ("windows_redirector.dll", os.path.join(ROOT, "build", "windows"))}


def _version():
    with open(os.path.join(ROOT, "package.json")) as f:
        return json.load(f)["version"]


def _wheel(env):
    path = os.environ.get(env)
    if not path:
        raise unittest.SkipTest(f"${env} names no wheel (npx tsx build/wheel.ts builds them)")
    return path


def _load_copy(init_py, name):
    """A separate instance of the package's module from the file init_py (its
    own globals: nothing loaded yet)."""
    spec = importlib.util.spec_from_file_location(name, init_py)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up while it runs)
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


class _WheelChecks:
    env = ""
    platform = ""

    @classmethod
    def setUpClass(cls):
        cls.path = _wheel(cls.env)
        cls.zip = zipfile.ZipFile(cls.path)
        cls.library, cls.built_dir = LIBRARIES[cls.platform]
        cls.dist_info = f"windows_redirector-{_version()}.dist-info"

    @classmethod
    def tearDownClass(cls):
        cls.zip.close()

    def read(self, name):
        return self.zip.read(name)

    def test_name_and_tags(self):
        # Python-version-independent, one platform: py3-none-<platform>.
        self.assertEqual(os.path.basename(self.path), f"windows_redirector-{_version()}-py3-none-{self.platform}.whl")
        wheel = email.parser.Parser().parsestr(self.read(f"{self.dist_info}/WHEEL").decode())
        self.assertEqual(wheel["Wheel-Version"], "1.0")
        self.assertEqual(wheel["Root-Is-Purelib"], "false")
        self.assertEqual(wheel.get_all("Tag"), [f"py3-none-{self.platform}"])

    def test_contents(self):
        # The module, its type marker and this platform's library, beside it;
        # nothing else (no other platform's library, no tests, no caches).
        self.assertEqual(sorted(self.zip.namelist()), sorted([
            "windows_redirector/__init__.py", "windows_redirector/py.typed", f"windows_redirector/{self.library}",
            f"{self.dist_info}/METADATA", f"{self.dist_info}/WHEEL", f"{self.dist_info}/RECORD"]))
        with open(os.path.join(ROOT, "python", "src", "windows_redirector", "__init__.py"), "rb") as f:
            self.assertEqual(self.read("windows_redirector/__init__.py"), f.read())
        with open(os.path.join(self.built_dir, self.library), "rb") as f:
            self.assertEqual(self.read(f"windows_redirector/{self.library}"), f.read(), "not the built library")

    def test_record(self):
        rows = list(csv.reader(io.StringIO(self.read(f"{self.dist_info}/RECORD").decode())))
        self.assertEqual(sorted(r[0] for r in rows), sorted(self.zip.namelist()))
        for name, digest, size in rows:
            if name.endswith("/RECORD"):
                self.assertEqual((digest, size), ("", ""))
                continue
            data = self.read(name)
            want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            self.assertEqual((digest, int(size)), (want, len(data)), name)

    def test_metadata(self):
        meta = email.parser.Parser().parsestr(self.read(f"{self.dist_info}/METADATA").decode())
        self.assertEqual(meta["Name"], "windows-redirector")
        self.assertEqual(meta["Version"], _version())
        self.assertEqual(meta["Requires-Python"], ">=3.10")
        self.assertEqual(meta["License-Expression"], "LGPL-3.0-or-later")
        self.assertIn("Typing :: Typed", meta.get_all("Classifier"))
        self.assertIsNone(meta.get_all("Requires-Dist"), "the package needs nothing beyond the standard library")
        self.assertIn("pip install", meta.get_payload(), "the long description is python/README.md")

    def test_the_library_exports_every_function_the_module_calls(self):
        exports = self.exports(self.read(f"windows_redirector/{self.library}"))
        self.assertEqual(sorted(set(wr._signatures()) - exports), [])

    def test_the_loader_finds_the_library_where_the_wheel_puts_it(self):
        # The wheel unpacked as pip lays it out; the module in it, with the
        # platform faked, looks beside itself first, and finds the library.
        with tempfile.TemporaryDirectory() as site:
            self.zip.extractall(site)
            here = os.path.join(site, "windows_redirector")
            cands, _ = wr._candidates(self.sys_platform, here, None, None, lambda _: None)
            first = cands[0][0]
            self.assertEqual(cands[0][1], "beside the module")
            self.assertTrue(os.path.isfile(first), first)
            self.assertEqual(os.path.basename(first), self.library)


class LinuxWheel(_WheelChecks, unittest.TestCase):
    env = "WR_WHEEL_LINUX"
    platform = "linux_x86_64"
    sys_platform = "linux"

    def exports(self, data):
        with tempfile.NamedTemporaryFile(suffix=".so") as f:
            f.write(data)
            f.flush()
            out = subprocess.run(["nm", "-D", "--defined-only", f.name], check=True, capture_output=True,
                                 text=True).stdout
        return {line.split()[-1] for line in out.splitlines() if line.strip()}

    def test_what_the_library_needs_of_the_system(self):
        # As python/README.md says: the distribution's libnetfilter_queue and
        # libmnl, and glibc 2.34 or newer; nothing else.
        with tempfile.NamedTemporaryFile(suffix=".so") as f:
            f.write(self.read(f"windows_redirector/{self.library}"))
            f.flush()
            dynamic = subprocess.run(["readelf", "-d", "-W", f.name], check=True, capture_output=True, text=True).stdout
            symbols = subprocess.run(["readelf", "--dyn-syms", "-W", f.name], check=True, capture_output=True,
                                     text=True).stdout
        self.assertEqual(sorted(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", dynamic)),
                         ["ld-linux-x86-64.so.2", "libc.so.6", "libmnl.so.0", "libnetfilter_queue.so.1"])
        self.assertNotRegex(dynamic, r"\((RPATH|RUNPATH)\)", "the library names no folder of the build machine")
        glibc = {tuple(int(n) for n in v.split(".")) for v in re.findall(r"@GLIBC_([\d.]+)", symbols)}
        self.assertEqual(max(glibc), (2, 34))

    def test_the_installed_files_are_the_wheel(self):
        # pip installed exactly this wheel: every file it recorded is the wheel's, byte for byte.
        dist = metadata.distribution("windows-redirector")
        for f in dist.files or []:
            if f.parts[0] == "windows_redirector" and "__pycache__" not in f.parts:
                self.assertEqual(f.read_binary(), self.read(str(f).replace(os.sep, "/")), str(f))


class WindowsWheel(_WheelChecks, unittest.TestCase):
    env = "WR_WHEEL_WINDOWS"
    platform = "win_amd64"
    sys_platform = "win32"

    def exports(self, data):
        # A PE32+ DLL for x86-64 (IMAGE_FILE_MACHINE_AMD64), and its export table's names.
        self.assertEqual(data[:2], b"MZ")
        pe = int.from_bytes(data[0x3C:0x40], "little")
        self.assertEqual(data[pe:pe + 4], b"PE\0\0")
        self.assertEqual(int.from_bytes(data[pe + 4:pe + 6], "little"), 0x8664, "not an x86-64 DLL")
        self.assertEqual(int.from_bytes(data[pe + 24:pe + 26], "little"), 0x20B, "not PE32+")
        with tempfile.NamedTemporaryFile(suffix=".dll") as f:
            f.write(data)
            f.flush()
            out = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", f.name], check=True, capture_output=True,
                                 text=True).stdout
        table = out.split("[Ordinal/Name Pointer] Table", 1)[1]
        return set(re.findall(r"^\s+\[\s*\d+\]\s+(\S+)$", table, re.M))

    def test_the_module_loads_the_dll_beside_it_on_windows(self):
        # The wheel's own module, run with sys.platform "win32" and ctypes.CDLL
        # faked (a Windows DLL cannot load here): it asks for the DLL beside
        # itself, declares every function on it, and searches nothing else.
        with tempfile.TemporaryDirectory() as site:
            self.zip.extractall(site)
            here = os.path.join(site, "windows_redirector")
            opened = []

            def cdll(path):
                opened.append(path)
                return types.SimpleNamespace(**{n: types.SimpleNamespace() for n in wr._signatures()})

            def no_search(name):
                raise AssertionError(f"searched the system for {name}")

            with mock.patch.object(sys, "platform", "win32"):
                win = _load_copy(os.path.join(here, "__init__.py"), "windows_redirector_win")
                with mock.patch.object(win.ctypes, "CDLL", cdll), \
                        mock.patch.object(win.ctypes.util, "find_library", no_search), \
                        mock.patch.dict(os.environ, {wr.LIBRARY_ENV: ""}):
                    path = win.library_path()
            self.assertEqual(opened, [path])
            self.assertEqual(path, os.path.join(here, "windows_redirector.dll"))

    def test_windows_search_order(self):
        # Beside the module, then set_library_path's (a folder here), then the
        # variable's (a file); never the system's search (not PATH, not the
        # current folder), even when the caller named nothing.
        here = "/site-packages/windows_redirector"
        with tempfile.TemporaryDirectory() as folder:
            cands, notes = wr._candidates("win32", here, folder, "/redirector/windows_redirector.dll",
                                          lambda _: self.fail("searched the system"))
        self.assertEqual(cands, [(here + "/windows_redirector.dll", "beside the module"),
                                 (folder + "/windows_redirector.dll", "set_library_path"),
                                 ("/redirector/windows_redirector.dll", "$WINDOWS_REDIRECTOR_LIBRARY")])
        self.assertEqual(notes, [])
        cands, notes = wr._candidates("win32", here, None, None, lambda _: self.fail("searched the system"))
        self.assertEqual(cands, [(here + "/windows_redirector.dll", "beside the module")])
        self.assertEqual(notes, ["set_library_path: not called", "$WINDOWS_REDIRECTOR_LIBRARY: not set"])


class Loader(unittest.TestCase):
    """The loader on Linux, in fresh interpreters: the module's file copied
    where no library is beside it."""

    def run_copy(self, code, env=None):
        with tempfile.TemporaryDirectory() as tmp:
            pkg = os.path.join(tmp, "windows_redirector")
            os.mkdir(pkg)
            shutil.copy(wr.__file__, pkg)
            full_env = {k: v for k, v in os.environ.items() if k != wr.LIBRARY_ENV}
            full_env.update(env or {})
            r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {tmp!r})\n" + code],
                               capture_output=True, text=True, env=full_env, cwd=tmp, timeout=60)
            return pkg, r

    def test_linux_search_order(self):
        # The system's search path only when the caller named no place.
        here = "/site-packages/windows_redirector"
        cands, notes = wr._candidates("linux", here, None, None, lambda n: "lib" + n + ".so.0")
        self.assertEqual(cands, [(here + "/libwindows_redirector.so", "beside the module"),
                                 ("libwindows_redirector.so.0", "the system's library search path")])
        self.assertEqual(notes, ["set_library_path: not called", "$WINDOWS_REDIRECTOR_LIBRARY: not set"])
        cands, _ = wr._candidates("linux", here, None, "/opt/wr/lib/libwindows_redirector.so",
                                  lambda _: self.fail("searched the system"))
        self.assertEqual(cands[1:], [("/opt/wr/lib/libwindows_redirector.so", "$WINDOWS_REDIRECTOR_LIBRARY")])

    def test_nothing_found_names_every_place_tried(self):
        code = ("import windows_redirector as wr, ctypes.util\n"
                "ctypes.util.find_library = lambda name: None\n"
                "wr.stats()\n")
        pkg, r = self.run_copy(code)
        self.assertNotEqual(r.returncode, 0)
        last = r.stderr.strip().splitlines()[-1]
        self.assertIn("OSError: windows_redirector: could not load the native library libwindows_redirector.so", last)
        self.assertIn(f"{pkg}/libwindows_redirector.so (beside the module): not there", last)
        self.assertIn("set_library_path: not called", last)
        self.assertIn("$WINDOWS_REDIRECTOR_LIBRARY: not set", last)
        self.assertIn("the system's library search path: no libwindows_redirector", last)
        self.assertIn("Install the wheel for this platform", last)

    def test_where_the_caller_says(self):
        built = os.path.join(ROOT, "build", "linux")
        for env, call in (({wr.LIBRARY_ENV: built}, ""),
                          ({wr.LIBRARY_ENV: os.path.join(built, "libwindows_redirector.so")}, ""),
                          ({}, f"wr.set_library_path({built!r})\n")):
            code = "import windows_redirector as wr\n" + call + "print(wr.library_path()); print(wr.version())\n"
            _, r = self.run_copy(code, env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.split(), [os.path.join(built, "libwindows_redirector.so"), _version()])

    def test_a_wrong_library_is_named_with_its_fault(self):
        # A file that is not the library (another shared library, lacking the
        # functions; a text file) is passed over, and the error says why.
        libc = [line.split()[-1] for line in open("/proc/self/maps") if re.search(r"/libc\.so\.6$", line.strip())][0]
        with tempfile.NamedTemporaryFile("w", suffix=".so") as junk:
            junk.write("not a library\n" * 100)
            junk.flush()
            for path, why in ((libc, "lacks initialize_global_config, start_redirector"),
                              (junk.name, "invalid ELF header")):
                _, r = self.run_copy("import windows_redirector as wr\nwr.stats()\n", {wr.LIBRARY_ENV: path})
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(f"{path} ($WINDOWS_REDIRECTOR_LIBRARY): ", r.stderr)
                self.assertIn(why, r.stderr)
                self.assertNotIn("search path", r.stderr, "the caller said where: nothing else is searched")


if __name__ == "__main__":
    unittest.main()
