"""Which allocator Arrow uses for backups and restores.

Arrow's default pool on Linux (mimalloc) keeps freed pages resident: on the benchmark's million-row
tables a restore peaked at 288-303 MB resident for at most 68 MB of live Arrow data, and at 230 MB
with Arrow's jemalloc pool, which returns memory sooner (backup: 272-300 MB against 245-255 MB), at
the same speed.

Arrow picks its process-wide default pool once, from `ARROW_DEFAULT_MEMORY_POOL`, when pyarrow is
first imported, and its C++ parts (Parquet's column encoders) allocate from that default whatever
pyarrow is told later. So importing this package arranges for pyarrow's first import to run with
the variable set to jemalloc (and unset again, so child processes are not affected), unless it is
already set or pyarrow was imported first: without importing pyarrow itself, which the Lambda
functions (they only read manifests) do not have; `lean_arrow_memory` then switches what pyarrow itself allocates
for the duration of a backup or restore and puts the previous default back.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    import pyarrow.parquet as pq

VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
P = ParamSpec("P")
R = TypeVar("R")


class _JemallocWhenArrowLoads:
    """Arrow reads ARROW_DEFAULT_MEMORY_POOL once, while pyarrow is first imported (memory.py says
    why jemalloc). Importing pyarrow here would make every user of this package pay for it, the
    Lambda functions among them, which only read manifests and have no pyarrow: so the variable is
    set for the duration of pyarrow's own first import instead, and unset again (child processes
    keep their defaults), unless the caller chose a pool or is not on Linux."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "pyarrow":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            return None  # another thread is already arranging it
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_with_jemalloc(module: ModuleType) -> None:
            if not sys.platform.startswith("linux") or VARIABLE in os.environ:
                exec_module(module)
                return
            os.environ[VARIABLE] = "jemalloc"
            try:
                exec_module(module)
            finally:
                del os.environ[VARIABLE]

        spec.loader.exec_module = exec_with_jemalloc  # type: ignore[method-assign]
        return spec


def prefer_jemalloc() -> None:
    """Arrange for pyarrow's first import (if it has not happened) to pick Arrow's jemalloc pool."""
    if "pyarrow" not in sys.modules and not any(isinstance(f, _JemallocWhenArrowLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _JemallocWhenArrowLoads())


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


def parquet_reader(path: Path | str) -> pq.ParquetFile:
    """A local Parquet file read batch by batch, one column chunk at a time. pyarrow's `ParquetFile`
    pre-buffers by default: it read every column chunk of the file into memory before the first
    batch, 111 MB for a backup's XCom table of 440,000 rows, where this reads 4 MB at most (and is
    faster: the files are local, there is no latency to hide)."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - after prefer_jemalloc has had its say

    return pq.ParquetFile(path, pre_buffer=False)
