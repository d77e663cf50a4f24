"""The seed functions through ctypes, as a Python caller uses them."""
import ctypes
import json
import os
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIB = os.environ.get("WR_LIBRARY", os.path.join(ROOT, "build", "linux", "libwindows_redirector.so"))


def load():
    lib = ctypes.CDLL(LIB)
    for name in ("start_redirector", "stop_redirector", "get_redirector_status"):
        getattr(lib, name).restype = ctypes.c_int32
        getattr(lib, name).argtypes = []
    lib.set_redirector_config.restype = ctypes.c_int32
    lib.set_redirector_config.argtypes = [ctypes.c_char_p]
    lib.initialize_global_config.restype = None
    lib.initialize_global_config.argtypes = []
    lib.update_app_port.restype = None
    lib.update_app_port.argtypes = [ctypes.c_uint16]
    lib.redirector_last_error.restype = ctypes.c_int32
    lib.redirector_last_error.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.redirector_last_error_code.restype = ctypes.c_int32
    lib.redirector_would_intercept.restype = ctypes.c_int32
    lib.redirector_would_intercept.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.redirector_version.restype = ctypes.c_char_p
    return lib


lib = load()


def last_error():
    buf = ctypes.create_string_buffer(1024)
    lib.redirector_last_error(buf, len(buf))
    return buf.value.decode("utf-8")


class SeedAbi(unittest.TestCase):
    def test_config_codes(self):
        lib.initialize_global_config()
        self.assertEqual(lib.set_redirector_config(None), -1)
        self.assertEqual(lib.set_redirector_config(b'{"intercept_pids": "x"}'), -2)
        self.assertIn("intercept_pids", last_error())
        self.assertEqual(lib.set_redirector_config(b'{"description": "\xff"}'), -3)
        cfg = json.dumps({"intercept_pids": [4201234, 4205678], "description": "python"}).encode()
        self.assertEqual(lib.set_redirector_config(cfg), 0)
        self.assertEqual(lib.redirector_would_intercept(4201234, None), 1)
        self.assertEqual(lib.redirector_would_intercept(os.getpid(), None), 0)

    def test_start_stop(self):
        lib.update_app_port(0)
        self.assertEqual(lib.start_redirector(), -2)
        self.assertIn("update_app_port", last_error())
        lib.update_app_port(8080)
        self.assertEqual(lib.stop_redirector(), -1)
        if os.geteuid() != 0:
            self.skipTest("start needs root")
        self.assertEqual(lib.start_redirector(), 0, last_error())
        self.assertEqual(lib.get_redirector_status(), 1)
        self.assertEqual(lib.start_redirector(), -1)
        self.assertEqual(lib.stop_redirector(), 0)
        self.assertEqual(lib.get_redirector_status(), 0)

    def test_version(self):
        self.assertRegex(lib.redirector_version().decode(), r"^\d+\.\d+\.\d+")


if __name__ == "__main__":
    unittest.main()
