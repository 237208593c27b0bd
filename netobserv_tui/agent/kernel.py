"""Preflight for eBPF on the running kernel: privileges, BTF, tracefs and headers for BCC.

BCC compiles C at run time and wants kernel headers. We only use UAPI types and read
struct layouts from BTF, so *any* recent header tree works; we look in this order:

1. ``BCC_KERNEL_SOURCE`` when the user set it;
2. ``/lib/modules/$(uname -r)/build`` (matching headers);
3. the newest Debian/Ubuntu ``linux-headers-*`` pair under ``/usr/src``, merged into one
   tree of symlinks (Debian splits headers into ``-common`` and ``-<arch>`` packages, and
   BCC needs them as one directory) and handed to BCC as ``BCC_KERNEL_SOURCE``.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from ..model.errors import KernelError, PrivilegeError

log = logging.getLogger(__name__)

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")
MERGED_HEADERS_ROOT = Path(os.environ.get("NETOBSERV_CACHE", "/var/cache/netobserv-tui"))


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    """Root, or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON (or CAP_SYS_ADMIN for the first and last)."""
    if os.geteuid() == 0:
        return
    caps = effective_capabilities()

    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    missing = []
    if not (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_BPF")
    if not has(CAP_NET_ADMIN):
        missing.append("CAP_NET_ADMIN")
    if not (has(CAP_PERFMON) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_PERFMON")
    if missing:
        raise PrivilegeError(
            "capturing flows loads eBPF programs and changes traffic-control settings, which "
            f"needs root or the capabilities {', '.join(missing)}; run it with sudo, or open a "
            "saved capture without privileges with `netobserv open FILE`"
        )


def check_btf() -> None:
    if not BTF_PATH.exists():
        raise KernelError(
            f"{BTF_PATH} is missing: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF), "
            "which the agent needs to read kernel struct layouts; use a kernel with BTF "
            "(every major distribution ships one since 2021)"
        )


def ensure_tracefs() -> Path:
    """Mount tracefs when it is not mounted yet (fresh machines often lack it)."""
    if (TRACEFS / "events").is_dir():
        return TRACEFS
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"tracefs", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        log.info("Mounted tracefs on %s.", TRACEFS)
    except OSError as exc:
        raise KernelError(
            f"tracefs is not mounted and mounting it failed ({exc}); run "
            f"`mount -t tracefs tracefs {TRACEFS}` as root and try again"
        ) from None
    return TRACEFS


@dataclass(frozen=True)
class Headers:
    path: Path | None
    origin: str


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _debian_header_pairs(src: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for common in src.glob("linux-headers-*-common"):
        stem = common.name.removesuffix("-common")
        for arch in src.glob(stem + "-*"):
            if arch != common and (arch / "include" / "generated").is_dir():
                pairs.append((common, arch))
    return sorted(pairs, key=lambda p: _version_key(p[1].name))


def _merge(common: Path, arch: Path, dest: Path) -> None:
    """A symlink farm of ``common`` overlaid by ``arch`` (arch wins on conflicts)."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    for base in (common, arch):
        for root, _dirs, files in os.walk(base, followlinks=False):
            rel = Path(root).relative_to(base)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                link = tmp / rel / name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(Path(root) / name)
    os.replace(tmp, dest)


def find_headers(src: Path = Path("/usr/src")) -> Headers:
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env:
        return Headers(Path(env), "BCC_KERNEL_SOURCE")
    build = Path("/lib/modules") / platform.release() / "build"
    if (build / "include").is_dir():
        return Headers(None, f"matching headers in {build}")
    pairs = _debian_header_pairs(src)
    if not pairs:
        raise KernelError(
            f"no kernel headers found for BCC (looked in {build} and {src}); install the "
            "distribution's headers package (on Debian: apt-get install linux-headers-amd64), "
            "or point BCC_KERNEL_SOURCE at a kernel header tree"
        )
    common, arch = pairs[-1]
    dest = MERGED_HEADERS_ROOT / "kheaders" / arch.name
    if not (dest / "include").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _merge(common, arch, dest)
    return Headers(dest, f"{arch.name} (+ -common) merged into {dest}")


def prepare_bcc() -> Headers:
    """Everything BCC needs before compiling; sets BCC_KERNEL_SOURCE when needed."""
    check_btf()
    ensure_tracefs()
    headers = find_headers()
    if headers.path is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers.path)
    log.info("Kernel headers for BCC: %s.", headers.origin)
    return headers
