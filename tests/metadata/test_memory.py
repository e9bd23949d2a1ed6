"""The engine asks Arrow for its jemalloc pool (less memory kept resident), respects an explicit
choice, and leaves the process's default as it found it."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

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
