"""The context-manager shape shared by the lab's services: ``with X(...) as x`` starts it,
leaving the block stops it, whatever happened inside."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class Service:
    """Subclasses implement ``start() -> Self`` and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
