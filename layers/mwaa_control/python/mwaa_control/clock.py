"""The control plane's "now": the wall clock, unless the local cloud installs its own.

Deployed, every function reads the system clock. The local cloud runs a whole week of MWAA on a
manual clock (localcloud/clock.py): it installs that clock here for its duration, so a domain
decision that compares with MWAA's timestamps (an environment's CreatedAt, a schedule's next
transition) sees the same time the emulated MWAA does. Domain code takes `now` as a parameter;
this is where handlers and compositions get it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], datetime] | None = None


def now() -> datetime:
    """An aware UTC instant."""
    return _source() if _source is not None else datetime.now(UTC)


def install(source: Callable[[], datetime] | None) -> None:
    """Use `source` for `now()` (None: the system clock again). Only the local cloud calls this."""
    global _source  # noqa: PLW0603 - one process-wide clock, as the system clock is
    _source = source
