"""Which allocator Arrow uses for backups and restores.

Arrow's default pool on Linux (mimalloc) keeps freed pages resident: on the benchmark's million-row
tables a restore peaked at 288-303 MB resident for at most 68 MB of live Arrow data, and at 230 MB
with Arrow's jemalloc pool, which returns memory sooner (backup: 272-300 MB against 245-255 MB), at
the same speed.

Arrow picks its process-wide default pool once, from `ARROW_DEFAULT_MEMORY_POOL`, when pyarrow is
first imported, and its C++ parts (Parquet's column encoders) allocate from that default whatever
pyarrow is told later. So importing this package imports pyarrow with the variable set to jemalloc
(and unset again, so child processes are not affected), unless it is already set or pyarrow was
imported first; `lean_arrow_memory` then switches what pyarrow itself allocates
for the duration of a backup or restore and puts the previous default back.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
P = ParamSpec("P")
R = TypeVar("R")


def prefer_jemalloc() -> None:
    # Linux wheels of pyarrow include jemalloc; elsewhere Arrow would warn and use its default.
    if not sys.platform.startswith("linux") or "pyarrow" in sys.modules or VARIABLE in os.environ:
        return
    os.environ[VARIABLE] = "jemalloc"
    try:
        import pyarrow  # noqa: F401, PLC0415 - Arrow reads the variable now, once
    finally:
        # Processes this one starts (an Airflow task's subprocesses) keep their own defaults.
        del os.environ[VARIABLE]


@contextlib.contextmanager
def lean_arrow_memory() -> Iterator[None]:
    import pyarrow as pa  # noqa: PLC0415 - after prefer_jemalloc has had its say

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc: keep the default
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def with_lean_arrow_memory(function: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with lean_arrow_memory():
            return function(*args, **kwargs)

    return wrapper
