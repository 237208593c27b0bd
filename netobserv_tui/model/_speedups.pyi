from collections.abc import Callable

Buffer = bytes | bytearray | memoryview

def ring_walk(data: Buffer, cons: int, prod: int, mask: int, chunk_bytes: int,
              left: int) -> tuple[list[tuple[int, int]], set[int]]: ...
def epb_blocks(body: Buffer, start: int, count: int, clock: int, names: dict[int, str],
               addresses: bool, options_of: Callable[[int, int, bytes], tuple[int, bytes]],
               out: bytearray) -> tuple[int, int, int] | None: ...
