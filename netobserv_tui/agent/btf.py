"""Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).

The drop hook reads a few ``struct sk_buff`` and ``struct sock_common`` members. Their
offsets change between kernel versions and configurations, so they come from BTF and are
passed to the C code as ``-D`` flags, never from (possibly mismatched) headers.

Only what we need of the format is decoded: the type section, names, and struct/union
members (looking through anonymous members, which is where ``sk_buff`` keeps most fields).
Format reference: the kernel's Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..model.errors import KernelError

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_MEMBER = struct.Struct("<III")

# Kinds and the size of the data that follows each type record.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19


@dataclass(frozen=True)
class _Type:
    name: str
    kind: int
    vlen: int
    kind_flag: bool
    size_or_type: int
    members: tuple[tuple[str, int, int], ...]  # (name, type id, bit offset)


class Btf:
    def __init__(self, data: bytes) -> None:
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = (
            _HEADER.unpack_from(data)
        )
        if magic != BTF_MAGIC:
            raise KernelError("the kernel's BTF has an unexpected format (bad magic)")
        types_raw = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[_Type | None] = [None]  # type id 0 is void
        self._by_name: dict[tuple[int, str], int] = {}
        pos = 0
        while pos < len(types_raw):
            name_off, info, size_or_type = _TYPE.unpack_from(types_raw, pos)
            pos += _TYPE.size
            vlen, kind, kind_flag = info & 0xFFFF, (info >> 24) & 0x1F, bool(info >> 31)
            members: tuple[tuple[str, int, int], ...] = ()
            if kind in (KIND_STRUCT, KIND_UNION):
                items = []
                for i in range(vlen):
                    m_name, m_type, m_off = _MEMBER.unpack_from(types_raw, pos + 12 * i)
                    bit_off = m_off & 0xFFFFFF if kind_flag else m_off
                    items.append((self._str(m_name), m_type, bit_off))
                members = tuple(items)
            pos += _extra_size(kind, vlen)
            t = _Type(self._str(name_off), kind, vlen, kind_flag, size_or_type, members)
            self.types.append(t)
            if t.name and kind in (KIND_STRUCT, KIND_UNION):
                self._by_name.setdefault((kind, t.name), len(self.types) - 1)

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def struct_id(self, name: str) -> int:
        for kind in (KIND_STRUCT, KIND_UNION):
            found = self._by_name.get((kind, name))
            if found is not None:
                return found
        raise KernelError(f"struct {name} is not in the kernel's BTF")

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of ``member`` in ``struct struct_name``, through anonymous members."""
        found = self._find(self.struct_id(struct_name), member)
        if found is None:
            raise KernelError(f"struct {struct_name} has no member {member} in this kernel")
        if found % 8:
            raise KernelError(f"{struct_name}.{member} is a bit field; cannot read it")
        return found // 8

    def _find(self, type_id: int, member: str) -> int | None:
        t = self.types[type_id]
        assert t is not None
        for name, m_type, bit_off in t.members:
            if name == member:
                return bit_off
            if not name:
                inner = self._resolve(m_type)
                t_inner = self.types[inner]
                if t_inner is not None and t_inner.kind in (KIND_STRUCT, KIND_UNION):
                    found = self._find(inner, member)
                    if found is not None:
                        return bit_off + found
        return None

    def _resolve(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type."""
        while True:
            t = self.types[type_id]
            if t is None or t.kind not in (
                KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG
            ):
                return type_id
            type_id = t.size_or_type


def _extra_size(kind: int, vlen: int) -> int:
    if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION, KIND_DATASEC, KIND_ENUM64):
        return 12 * vlen
    if kind in (KIND_ENUM, KIND_FUNC_PROTO):
        return 8 * vlen
    return 0


@lru_cache(maxsize=1)
def kernel_btf(path: Path = Path("/sys/kernel/btf/vmlinux")) -> Btf:
    try:
        return Btf(path.read_bytes())
    except OSError as exc:
        raise KernelError(f"cannot read the kernel's BTF at {path}: {exc}") from None


#: (C macro, struct, member) for everything the drop hook reads.
SKB_OFFSETS = (
    ("SKB_OFF_HEAD", "sk_buff", "head"),
    ("SKB_OFF_LEN", "sk_buff", "len"),
    ("SKB_OFF_NETWORK_HEADER", "sk_buff", "network_header"),
    ("SKB_OFF_TRANSPORT_HEADER", "sk_buff", "transport_header"),
    ("SKB_OFF_SK", "sk_buff", "sk"),
    ("SK_OFF_STATE", "sock_common", "skc_state"),
    ("SKB_OFF_DEV", "sk_buff", "dev"),
    ("NETDEV_OFF_IFINDEX", "net_device", "ifindex"),
    # possible_net_t nd_net holds one member, struct net *net, at its start.
    ("NETDEV_OFF_NET", "net_device", "nd_net"),
)


def drop_hook_defines(btf: Btf | None = None) -> dict[str, int]:
    btf = btf or kernel_btf()
    defines = {macro: btf.offset(struct_name, member)
               for macro, struct_name, member in SKB_OFFSETS}
    # struct net's ns (struct ns_common) holds the namespace's inode number.
    defines["NET_OFF_NS_INUM"] = btf.offset("net", "ns") + btf.offset("ns_common", "inum")
    return defines
