"""Preflight for eBPF on the running kernel: privileges, BTF, tracefs and headers for BCC.

BCC compiles C at run time and wants kernel headers. We only use UAPI types and read
struct layouts from BTF, so *any* recent header tree works, matching or not. The
candidates, best first (``HeaderSearch``):

1. ``BCC_KERNEL_SOURCE`` when the user set it (then nothing else is tried);
2. the node's matching headers, ``/lib/modules/$(uname -r)/build``;
3. the node's newest Debian/Ubuntu ``linux-headers-*`` pair under ``/usr/src``, merged into
   one tree of symlinks (Debian splits headers into ``-common`` and ``-<arch>`` packages, and
   BCC needs them as one directory);
4. the generic header tree shipped in the image, under ``/opt/netobserv-tui/kernel-headers``
   (the agent pod mounts the node's ``/lib/modules`` and ``/usr/src`` over the image's, so
   the image keeps its own elsewhere).

The agent compiles with the first; if that tree cannot compile the program it says so and
tries the next (``Agent._load``).
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass, field
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
#: Where the image keeps its generic kernel headers, one tree per directory.
IMAGE_HEADERS = Path("/opt/netobserv-tui/kernel-headers")
MODULES = Path("/lib/modules")
USR_SRC = Path("/usr/src")


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
    """One kernel header tree BCC can compile with."""

    #: What BCC_KERNEL_SOURCE is set to; None: unset, BCC finds /lib/modules/<release>/build.
    path: Path | None
    #: "user" (BCC_KERNEL_SOURCE), "node" (mounted from the host) or "image".
    origin: str
    #: The tree in words, for logs: which package or directory.
    detail: str
    #: Whether the tree is the running kernel's own (else only its UAPI types are used);
    #: None when unknown (the user's tree).
    matching: bool | None

    def describe(self) -> str:
        if self.matching is None:
            return f"{self.origin} headers: {self.detail}"
        fit = ("matches the running kernel" if self.matching else
               f"not the running kernel's ({platform.release()}): only its UAPI types are "
               "used, struct layouts come from BTF")
        return f"{self.origin} headers: {self.detail}; {fit}"

    def as_dict(self) -> dict[str, object]:
        return {"origin": self.origin, "detail": self.detail, "matching": self.matching,
                "path": str(self.path) if self.path else None}

    def prepare(self) -> Headers:
        """Point BCC at this tree (through BCC_KERNEL_SOURCE)."""
        global _bcc_source_set
        if self.path is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
            _bcc_source_set = None
        else:
            os.environ["BCC_KERNEL_SOURCE"] = _bcc_source_set = str(self.path)
        return self


#: The BCC_KERNEL_SOURCE this process set itself (not the user's choice).
_bcc_source_set: str | None = None


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
    """``common`` overlaid by ``arch`` as one tree of symlinks (arch wins on conflicts)."""
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed agent's, with our PID (1 in a pod)
    _overlay([common, arch], tmp)
    try:
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "include").is_dir():
            raise
        shutil.rmtree(tmp)  # another agent finished the same tree first


def _overlay(sources: list[Path], dest: Path) -> None:
    """Make ``dest`` show the union of the directories ``sources`` (later ones win on a
    name clash). A name that is a directory in several sources becomes a directory here,
    merged below; anything else becomes one symlink. A Debian pair then takes a few dozen
    links (``include/linux`` is only in -common, ``include/generated`` only in -amd64), not
    one per file: 16,000 symlinks took 4.5 s on the development machines, at every pod start.
    """
    dest.mkdir(parents=True)
    entries: dict[str, list[Path]] = {}
    for source in sources:
        with os.scandir(source) as it:
            for entry in it:
                entries.setdefault(entry.name, []).append(Path(entry.path))
    for name, paths in entries.items():
        dirs = [path for path in paths if path.is_dir()]
        if len(dirs) > 1 and paths[-1].is_dir():
            _overlay(dirs, dest / name)
        else:
            (dest / name).symlink_to(paths[-1])


def _merged(common: Path, arch: Path, cache: Path) -> Path:
    dest = cache / "kheaders" / arch.name
    if not (dest / "include").is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _merge(common, arch, dest)
    return dest


@dataclass(frozen=True)
class HeaderSearch:
    """Where header trees are looked for; the defaults are the real places (tests change
    them)."""

    release: str = field(default_factory=platform.release)
    modules: Path = MODULES
    src: Path = USR_SRC
    image: Path = IMAGE_HEADERS
    cache: Path = MERGED_HEADERS_ROOT

    def candidates(self) -> list[Headers]:
        """Every usable header tree, best first (see the module docstring); may be empty."""
        env = os.environ.get("BCC_KERNEL_SOURCE")
        if env and env != _bcc_source_set:
            return [Headers(Path(env), "user", f"BCC_KERNEL_SOURCE={env}", None)]
        found = []
        build = self.modules / self.release / "build"
        if (build / "include").is_dir():
            # BCC finds this one itself, with the "source" tree next to it (Debian splits
            # the two), so BCC_KERNEL_SOURCE stays unset for the real /lib/modules.
            path = None if self.modules == MODULES else build
            found.append(Headers(path, "node", f"{build} -> {build.resolve()}", True))
        pairs = _debian_header_pairs(self.src)
        if pairs:
            common, arch = pairs[-1]
            found.append(Headers(
                _merged(common, arch, self.cache), "node",
                f"{arch.name} (+ -common) in {self.src}",
                arch.name.startswith(f"linux-headers-{self.release}"),
            ))
        if self.image.is_dir():
            trees = [d for d in self.image.iterdir() if (d / "include").is_dir()]
            for tree in sorted(trees, key=lambda d: _version_key(d.name), reverse=True):
                found.append(Headers(tree, "image", f"{tree.name} in {self.image}",
                                     tree.name == f"linux-headers-{self.release}"))
        return found

    def missing(self) -> KernelError:
        return KernelError(
            f"no kernel headers found for BCC (looked in {self.modules / self.release}/build, "
            f"{self.src} and {self.image}); install the distribution's headers package (on "
            "Debian: apt-get install linux-headers-amd64), or point BCC_KERNEL_SOURCE at a "
            "kernel header tree; any recent tree works, it need not match the running kernel"
        )


def find_headers(search: HeaderSearch | None = None) -> Headers:
    """The best header tree; a KernelError saying what to install when there is none."""
    search = search or HeaderSearch()
    candidates = search.candidates()
    if not candidates:
        raise search.missing()
    return candidates[0]


def prepare_bcc() -> list[Headers]:
    """Everything BCC needs before compiling: checks BTF and tracefs, sets BCC's environment
    for the best header tree, and returns every candidate tree, best first."""
    check_btf()
    ensure_tracefs()
    search = HeaderSearch()
    candidates = search.candidates()
    if not candidates:
        raise search.missing()
    candidates[0].prepare()
    log.info("Kernel headers for BCC: %s.", candidates[0].describe())
    return candidates
