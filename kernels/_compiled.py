"""A cache of ``mx.compile``-d functions keyed by input signature, with hit and miss counts."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import mlx.core as mx

from kernels._counting import CountingCache

__all__ = ["CompiledCache"]


class CompiledCache(CountingCache):
    """Compiled MLX functions keyed by (name, shapes, dtypes); a new signature is a miss.

    The first call of a compiled function traces the graph and, on Linux, builds
    C++ with the system compiler (cached on disk by MLX); the cache keeps one
    compiled callable per signature so later calls reuse the trace.

    Examples
    --------
    >>> cache = CompiledCache()
    >>> f = cache.get("double", lambda a: a * 2, (("x", (2,), "float32"),))
    >>> g = cache.get("double", lambda a: a * 2, (("x", (2,), "float32"),))
    >>> f is g, cache.stats()
    (True, (1, 1))
    """

    def __init__(self) -> None:
        super().__init__()
        self._fns: dict[Hashable, Callable[..., Any]] = {}

    def get(
        self,
        name: str,
        fn: Callable[..., Any],
        signature: Hashable,
        *,
        bypass: bool = False,
    ) -> Callable[..., Any]:
        """Return the compiled ``fn`` for ``signature``; ``bypass`` forces a fresh miss."""
        key = (name, signature)
        with self._lock:
            if not bypass and key in self._fns:
                self._hits += 1
                return self._fns[key]
            self._misses += 1
            # A fresh wrapper so MLX retraces instead of reusing its own trace.
            compiled = mx.compile(lambda *args: fn(*args))
            if not bypass:
                self._fns[key] = compiled
            return compiled
