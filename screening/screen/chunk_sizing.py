"""How many records go into the next chunk: about ``target_s`` seconds of one worker's work.

Why: a chunk is the unit of resumption, so a chunk that takes ten minutes is ten minutes lost to
a Ctrl-C, and a small database that is one chunk keeps nothing at all. The sizer starts small
(the rate is unknown), measures records per second of worker time on the chunks that finish,
and sizes each new chunk to ``target_s`` seconds at that rate, growing at most ``growth``-fold
per chunk and staying between ``minimum`` and ``maximum`` records. A fixed ``--chunk-size`` is a
sizer whose every chunk has that size (:meth:`ChunkSizer.fixed`).
"""

from __future__ import annotations

from collections import deque

DEFAULT_MAX_CHUNK = 2048  # records: the largest chunk, and the fixed size screening used before
DEFAULT_CHUNK_SECONDS = 30.0  # seconds of one worker's work per chunk
FIRST_CHUNK = 64  # records in each chunk cut before any rate is known


class ChunkSizer:
    """``next_size()`` records per chunk from the rates ``observe(items, seconds)`` reports.

    The rate is the records per second of the last ``window`` finished chunks together (the
    first chunk carries the start-up cost, so it does not weigh on the rate for long).
    """

    def __init__(
        self,
        maximum: int = DEFAULT_MAX_CHUNK,
        target_s: float = DEFAULT_CHUNK_SECONDS,
        first: int = FIRST_CHUNK,
        minimum: int = 8,
        growth: float = 4.0,
        window: int = 4,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"chunk size must be at least 1, got {maximum}")
        if target_s <= 0:
            raise ValueError(f"seconds per chunk must be positive, got {target_s}")
        self.maximum, self.target_s, self.growth = int(maximum), float(target_s), float(growth)
        self.minimum = max(1, min(int(minimum), self.maximum))
        self.first = max(self.minimum, min(int(first), self.maximum))
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)
        self._last: int | None = None

    @classmethod
    def fixed(cls, size: int) -> ChunkSizer:
        """Every chunk ``size`` records, whatever the rate (``--chunk-size``)."""
        return cls(maximum=size, first=size, minimum=size)

    @property
    def is_fixed(self) -> bool:
        return self.minimum == self.maximum

    def observe(self, items: int, seconds: float) -> None:
        """A chunk of ``items`` records took ``seconds`` of one worker's time."""
        if items > 0 and seconds > 0:
            self._recent.append((items, seconds))

    @property
    def rate(self) -> float | None:
        """Records per second of one worker, or None before any chunk has finished."""
        if not self._recent:
            return None
        return sum(n for n, _ in self._recent) / sum(s for _, s in self._recent)

    def next_size(self) -> int:
        """Records for the chunk about to be cut."""
        rate = self.rate
        if rate is None or self.is_fixed:
            size = self.first
        else:
            ceiling = self.maximum if self._last is None else min(self.maximum, int(self._last * self.growth))
            size = max(self.minimum, min(ceiling, round(rate * self.target_s)))
        self._last = size
        return size


__all__ = ["DEFAULT_CHUNK_SECONDS", "DEFAULT_MAX_CHUNK", "FIRST_CHUNK", "ChunkSizer"]
