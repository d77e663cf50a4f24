"""Hatchling hooks of the windows-redirector wheel.

The version comes from the project's package.json. A wheel carries the native
library of one platform, beside the module; build/wheel.ts names it:

    WR_WHEEL_LIBRARY   the library file (libwindows_redirector.so or windows_redirector.dll)
    WR_WHEEL_PLATFORM  the wheel's platform tag (linux_x86_64, win_amd64)

A wheel without them is refused: one without the library would install and
then fail at the first call. An editable install (pip install -e) takes the
library from where the caller says (set_library_path, WINDOWS_REDIRECTOR_LIBRARY).
"""
import json
import os

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

LIBRARIES = {"linux_x86_64": "libwindows_redirector.so", "win_amd64": "windows_redirector.dll"}


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        package_json = os.path.join(self.root, "..", "package.json")
        with open(package_json, encoding="utf-8") as f:
            metadata["version"] = json.load(f)["version"]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        library = os.environ.get("WR_WHEEL_LIBRARY", "")
        platform = os.environ.get("WR_WHEEL_PLATFORM", "")
        if platform not in LIBRARIES or not os.path.isfile(library):
            raise RuntimeError("a windows-redirector wheel carries the native library: build it with "
                               "`npx tsx build/wheel.ts` (WR_WHEEL_LIBRARY and WR_WHEEL_PLATFORM, one of "
                               f"{', '.join(LIBRARIES)}; got {library!r}, {platform!r})")
        if os.path.basename(library) != LIBRARIES[platform]:
            raise RuntimeError(f"the {platform} wheel carries {LIBRARIES[platform]}, not {library}")
        build_data["force_include"][library] = f"windows_redirector/{LIBRARIES[platform]}"
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{platform}"
