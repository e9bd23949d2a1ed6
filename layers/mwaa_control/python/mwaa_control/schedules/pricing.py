"""What an environment costs per hour while it runs, and so what its paused hours save.

Prices are the list prices of `docs/mwaa-facts.md` (USD per hour, us-east-1 and us-west-2; the AWS
compute blog's cost example quotes the same mw1.small price for us-east-2). A paused environment is
deleted, so each paused hour saves the environment fee plus what its minimum capacity adds: extra
workers (MinWorkers beyond the included one), extra schedulers and extra webservers (beyond the
included ones). Workers that autoscale above MinWorkers are not counted: a paused hour saves at
least this much. Metadata storage (per GB-month) is not counted either: the snapshot we keep
instead is stored elsewhere.

Included counts (unverified against AWS's pricing page, sources disagree): one worker, two
schedulers and two webservers (the defaults of Airflow 2+ environments); one of each on mw1.micro,
whose size is fixed. They are fields of `ClassPrice`, so a corrected table changes no code.
Money is `Decimal` throughout and rounded to the cent (half up) only when reported.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mwaa_control.errors import ControlPlaneError

CENT = Decimal("0.01")
HOUR = dt.timedelta(hours=1)
DEFAULT_REGION = "us-east-1"


class UnknownPrice(ControlPlaneError):
    """No price is known for this region or environment class: savings are not guessed."""


class ClassPrice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    environment: Decimal = Field(gt=0)
    extra_worker: Decimal | None = None
    """None when the class cannot have extra workers (mw1.micro) or no price is published."""
    extra_scheduler: Decimal | None = None
    extra_webserver: Decimal | None = None
    included_workers: int = Field(default=1, ge=1)
    included_schedulers: int = Field(default=2, ge=1)
    included_webservers: int = Field(default=2, ge=1)


class EnvironmentSize(BaseModel):
    """The fields of GetEnvironment that set the hourly price (defaults: MWAA's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    environment_class: str = "mw1.small"
    min_workers: int = Field(default=1, ge=1, le=25)
    schedulers: int = Field(default=2, ge=1, le=5)
    min_webservers: int = Field(default=2, ge=1, le=5)


def size_from_request(request: Mapping[str, object]) -> EnvironmentSize:
    """The size GetEnvironment shows, or a snapshot's CreateEnvironment request asks for (both name
    the fields alike); a field left out has MWAA's default."""
    fields = {
        "environment_class": request.get("EnvironmentClass"),
        "min_workers": request.get("MinWorkers"),
        "schedulers": request.get("Schedulers"),
        "min_webservers": request.get("MinWebservers"),
    }
    return EnvironmentSize.model_validate({k: v for k, v in fields.items() if v is not None})


def _d(text: str) -> Decimal:
    return Decimal(text)


_LIST_PRICES: Mapping[str, ClassPrice] = MappingProxyType(
    {
        "mw1.micro": ClassPrice(
            environment=_d("0.29"), included_workers=1, included_schedulers=1, included_webservers=1
        ),
        "mw1.small": ClassPrice(
            environment=_d("0.49"), extra_worker=_d("0.055"), extra_scheduler=_d("0.055"), extra_webserver=_d("0.055")
        ),
        "mw1.medium": ClassPrice(
            environment=_d("0.74"), extra_worker=_d("0.11"), extra_scheduler=_d("0.11"), extra_webserver=_d("0.055")
        ),
        "mw1.large": ClassPrice(
            environment=_d("0.99"), extra_worker=_d("0.22"), extra_scheduler=_d("0.22"), extra_webserver=_d("0.11")
        ),
        "mw1.xlarge": ClassPrice(environment=_d("1.98")),
        "mw1.2xlarge": ClassPrice(environment=_d("3.96")),
    }
)

PRICE_TABLES: Mapping[str, Mapping[str, ClassPrice]] = MappingProxyType(
    {"us-east-1": _LIST_PRICES, "us-west-2": _LIST_PRICES}
)
"""Region -> environment class -> prices. Other regions are priced differently: pass their table."""


def _extra(count: int, included: int, price: Decimal | None, what: str, environment_class: str) -> Decimal:
    extra = max(0, count - included)
    if extra == 0:
        return Decimal(0)
    if price is None:
        raise UnknownPrice(f"no price for an extra {what} of {environment_class} ({count} requested)")
    return extra * price


def hourly_price(
    size: EnvironmentSize,
    region: str = DEFAULT_REGION,
    tables: Mapping[str, Mapping[str, ClassPrice]] = PRICE_TABLES,
) -> Decimal:
    """USD per hour the environment costs while it exists (at its minimum capacity)."""
    if region not in tables:
        raise UnknownPrice(f"no MWAA price table for region {region!r} (known: {', '.join(sorted(tables))})")
    prices = tables[region].get(size.environment_class)
    if prices is None:
        raise UnknownPrice(f"no price for environment class {size.environment_class!r} in {region}")
    cls = size.environment_class
    return (
        prices.environment
        + _extra(size.min_workers, prices.included_workers, prices.extra_worker, "worker", cls)
        + _extra(size.schedulers, prices.included_schedulers, prices.extra_scheduler, "scheduler", cls)
        + _extra(size.min_webservers, prices.included_webservers, prices.extra_webserver, "webserver", cls)
    )


def hours(duration: dt.timedelta) -> Decimal:
    """Exact hours in a duration (microsecond resolution, no float on the way)."""
    micro = (duration.days * 86_400 + duration.seconds) * 1_000_000 + duration.microseconds
    return Decimal(micro) / Decimal(3_600_000_000)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def cost(duration: dt.timedelta, size: EnvironmentSize, region: str = DEFAULT_REGION) -> Decimal:
    """USD, to the cent, for an environment of `size` existing during `duration`."""
    return to_cents(hours(duration) * hourly_price(size, region))


def paused_duration(
    paused: Iterable[tuple[dt.datetime, dt.datetime | None]], start: dt.datetime, end: dt.datetime
) -> dt.timedelta:
    """Time within [start, end) covered by the pause intervals (paused_at, resumed_at or None if
    still paused). Overlapping intervals are counted once."""
    clipped = sorted(
        (max(a, start), min(b if b is not None else end, end))
        for a, b in paused
        if a < end and (b is None or b > start)
    )
    total = dt.timedelta(0)
    cursor = start
    for a, b in clipped:
        begin = max(a, cursor)
        if b > begin:
            total += b - begin
            cursor = b
    return total


class Savings(BaseModel):
    """What pausing saved one environment over [start, end), kept with its state for the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: AwareDatetime
    end: AwareDatetime
    hourly_price: Decimal
    hours_paused: Decimal
    hours_running: Decimal
    saved: Decimal
    """USD, to the cent."""
    spent: Decimal
    """USD, to the cent, for the hours the environment existed."""

    @property
    def saved_fraction(self) -> Decimal:
        total = self.hours_paused + self.hours_running
        return Decimal(0) if total == 0 else self.hours_paused / total


def savings(
    paused: Iterable[tuple[dt.datetime, dt.datetime | None]],
    start: dt.datetime,
    end: dt.datetime,
    size: EnvironmentSize,
    region: str = DEFAULT_REGION,
) -> Savings:
    """Hours paused and dollars saved over [start, end), from the environment's pause intervals."""
    if end < start:
        raise ValueError("end is before start")
    price = hourly_price(size, region)
    paused_hours = hours(paused_duration(paused, start, end))
    running_hours = hours(end - start) - paused_hours
    return Savings(
        start=start,
        end=end,
        hourly_price=price,
        hours_paused=paused_hours,
        hours_running=running_hours,
        saved=to_cents(paused_hours * price),
        spent=to_cents(running_hours * price),
    )
