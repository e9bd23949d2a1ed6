"""The engine asks Arrow for its jemalloc pool (less memory kept resident), respects an explicit
choice, and leaves the process's default as it found it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mwaa_control.metadata.database import parquet_batches
from mwaa_control.metadata.memory import lean_arrow_memory

PROBE = "import mwaa_control.metadata.backup, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


def _pool_in_fresh_interpreter(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env={**clean, **env}, check=True, timeout=120
    )
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_jemalloc(), reason="pyarrow without jemalloc")
def test_importing_the_engine_first_selects_jemalloc() -> None:
    assert _pool_in_fresh_interpreter() == "jemalloc"


def test_an_explicit_choice_is_kept() -> None:
    assert _pool_in_fresh_interpreter(ARROW_DEFAULT_MEMORY_POOL="system") == "system"


@pytest.mark.skipif(not _has_jemalloc(), reason="pyarrow without jemalloc")
def test_the_previous_default_is_put_back() -> None:
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        with lean_arrow_memory():
            assert pa.default_memory_pool().backend_name == "jemalloc"
        assert pa.default_memory_pool().backend_name == "system"
    finally:
        pa.set_memory_pool(before)


def test_a_backup_file_is_read_a_row_group_at_a_time(tmp_path: Path) -> None:
    """Restore, verification and the pre-restore checks read a table's file batch by batch; pyarrow's
    ParquetFile would pre-buffer every column chunk of it first (the whole 40 MB file here)."""
    rows = 40_000
    values = pa.array([os.urandom(1000) for _ in range(rows)], pa.binary())  # incompressible: ~40 MB
    path = tmp_path / "xcom.parquet"
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("value", pa.binary())])) as writer:
        for start in range(0, rows, 4000):  # ten row groups of ~4 MB, as backups write them
            ids = pa.array(range(start, start + 4000), pa.int64())
            writer.write_table(pa.table({"id": ids, "value": values[start : start + 4000]}))
    assert pq.ParquetFile(path).metadata.num_row_groups == 10
    before, highest, seen = pa.total_allocated_bytes(), 0, 0
    for batch in parquet_batches(path, 65_536, 2 << 20):
        highest = max(highest, pa.total_allocated_bytes() - before)
        seen += batch.num_rows
    assert seen == rows
    assert highest < 12 << 20, f"{highest >> 20} MB of Arrow memory to read a 40 MB file"
    before, highest = pa.total_allocated_bytes(), 0
    for _ in pq.ParquetFile(path).iter_batches(batch_size=2000):  # what it would be otherwise
        highest = max(highest, pa.total_allocated_bytes() - before)
    assert highest > 30 << 20  # if pyarrow stops pre-buffering by default, this test says so
