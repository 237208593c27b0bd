"""Build hook: compiles netobserv_tui/model/_speedups.c, the packet capture's per-packet
loops in C, into an extension module next to it (the wheel carries it; an editable install
finds it in the tree).

Without a C compiler or Python's headers (Debian: gcc, python3-dev) the build goes on,
says so, and the package runs its Python twins of those loops (netobserv_tui/model/
speedups.py): the same results, about ten times the CPU per packet.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("netobserv_tui/model/_speedups.c")


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root) / SOURCE
        target = source.with_name("_speedups" + sysconfig.get_config_var("EXT_SUFFIX"))
        compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or "cc"]
        include = sysconfig.get_paths()["include"]
        command = [*compiler, "-O2", "-g0", "-shared", "-fPIC", "-Wall", "-Wextra",
                   "-Wno-unused-parameter", f"-I{include}", str(source), "-o", str(target)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as err:
            self._without(f"no C compiler ({err})")
            return
        if done.returncode != 0:
            self._without(f"compiling failed:\n{done.stderr.strip()}")
            target.unlink(missing_ok=True)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].append(str(target.relative_to(self.root)))

    @staticmethod
    def _without(why: str) -> None:
        print(f"netobserv-tui: the C speedups are not built, {why}; the packet capture "
              "uses its Python loops (install gcc and python3-dev, then reinstall)",
              file=sys.stderr)
