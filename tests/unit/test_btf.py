"""Our BTF reader against pahole, an independent reader of the same kernel BTF."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netobserv_tui.agent.btf import SKB_OFFSETS, Btf, kernel_btf
from netobserv_tui.model.errors import KernelError

VMLINUX = Path("/sys/kernel/btf/vmlinux")
pytestmark = [
    pytest.mark.skipif(not VMLINUX.exists(), reason="this kernel has no BTF"),
    pytest.mark.skipif(shutil.which("pahole") is None, reason="pahole (dwarves) not installed"),
]


def pahole_offset(struct: str, member: str) -> int:
    out = subprocess.run(["pahole", "-C", struct, str(VMLINUX)], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(rf"[\s*]{member};\s+/\*\s+(\d+)\s", out)
    assert match, f"pahole shows no {struct}.{member}"
    return int(match.group(1))


@pytest.mark.parametrize(("macro", "struct", "member"), SKB_OFFSETS)
def test_offsets_agree_with_pahole(macro: str, struct: str, member: str) -> None:
    assert kernel_btf().offset(struct, member) == pahole_offset(struct, member), macro


def test_unknown_names_fail_with_a_clear_message() -> None:
    btf = kernel_btf()
    with pytest.raises(KernelError, match="no member nonexistent"):
        btf.offset("sk_buff", "nonexistent")
    with pytest.raises(KernelError, match="struct no_such_struct is not in"):
        btf.offset("no_such_struct", "x")


def test_garbage_is_refused() -> None:
    with pytest.raises(KernelError, match="bad magic"):
        Btf(b"\0" * 64)
