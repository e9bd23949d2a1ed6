"""Pickled values in a backup: checked before a restore, never loaded by the standard unpickler.

Airflow 2 keeps `dag_run.conf` (PickleType), `task_instance.executor_config` and
`task_instance_history.executor_config` (ExecutorConfigType, dill) as pickles, and XCom values too
when `enable_xcom_pickling` is on; Airflow unpickles them whenever it reads a run or a task
instance (the UI, `airflow dags list-runs`, the scheduler). A pickle can call any importable
function while it loads, so a restore writes a pickled value only if a restricted unpickler
admits it: plain data (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float,
complex, bool, None), the standard library's datetime, Decimal and ZoneInfo types, and pendulum's
date/time types and time zones (module paths of pendulum 2 and 3, as Airflow's own values pickle
them). Every other global (os.system, builtins.eval, getattr beyond the `_unpickle` class methods
time zones pickle with, copyreg beyond the reconstructor of an admitted class, Kubernetes models,
any class), persistent ids and the extension registry are refused.

Checking never calls the admitted constructors either: each admitted class is replaced by an inert
stand-in that only records its arguments, so a check needs neither pendulum installed nor trust in
what a constructor does with hostile arguments. `load_plain` (used to drop task tokens from run
confs) builds real values where the module is importable.
"""

from __future__ import annotations

import codecs
import copyreg
import importlib
import io
import pickle
import pickletools
from datetime import tzinfo
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mwaa_control.metadata import catalog
from mwaa_control.metadata.errors import UnsafePickle
from mwaa_control.metadata.schema import Kind, Table

MAX_PICKLE_BYTES = 64 << 20
"""Larger values are refused: no conf or executor config is near this, and loading is bounded."""
MAX_DEPTH = 1000
CHECK_BATCH_ROWS = 4096
ADMITTED_VALUES, ADMITTED_VALUE_BYTES = 10_000, 4096

# (module, name) -> what it is. Python 2 names (protocols 0-2 write them) are mapped first.
ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
PLAIN_CLASSES = {
    ("datetime", "datetime"),
    ("datetime", "date"),
    ("datetime", "time"),
    ("datetime", "timedelta"),
    ("datetime", "timezone"),
    ("decimal", "Decimal"),
    ("zoneinfo", "ZoneInfo"),
    # pendulum 3 (Airflow 2.8+) and 2 (earlier releases)
    ("pendulum.datetime", "DateTime"),
    ("pendulum.date", "Date"),
    ("pendulum.time", "Time"),
    ("pendulum.duration", "Duration"),
    ("pendulum.interval", "Interval"),
    ("pendulum.period", "Period"),
    ("pendulum.tz.timezone", "Timezone"),
    ("pendulum.tz.timezone", "FixedTimezone"),
    ("pendulum.tz.zoneinfo.transition", "Transition"),
    ("pendulum.tz.zoneinfo.transition_type", "TransitionType"),
}
BUILTIN_TYPES: dict[tuple[str, str], type] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
}
TIME_ZONES = {"Timezone", "FixedTimezone", "ZoneInfo", "timezone"}
# Time zones pickle as getattr(<class>, "_unpickle")(key, ...): a class method, looked up by name.
UNPICKLE_METHODS = {("zoneinfo", "ZoneInfo"), ("pendulum.tz.timezone", "Timezone")}


class Recorder:
    """What an admitted class is during a check: it records what it was given and runs nothing."""

    pickled_as: tuple[str, str] = ("", "")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __reduce__(self) -> Any:
        raise pickle.PicklingError(
            f"{'.'.join(self.pickled_as)} is not importable here: the value cannot be re-pickled"
        )

    @classmethod
    def unpickle(cls, *args: Any) -> Any:
        return cls(*args)


class StandIn(Recorder):
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = object.__new__(cls)
        instance.__dict__["arguments"] = (args, kwargs)
        return instance


class StandInZone(tzinfo, Recorder):
    """A time zone class: a tzinfo, so a real datetime accepts it (Airflow 2's `utcnow()` is a
    standard datetime in a pendulum time zone)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = tzinfo.__new__(cls)
        instance.__dict__["arguments"] = (args, kwargs)
        return instance


class PlainDataUnpickler(pickle.Unpickler):
    """Admits only plain data. `real`: build real objects where the module is importable."""

    def __init__(self, data: bytes, *, real: bool) -> None:
        super().__init__(io.BytesIO(data))
        self.real = real
        self.classes: dict[int, tuple[str, str]] = {}
        self.stand_ins: dict[tuple[str, str], type[Recorder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = ALIASES.get(module, module)
        key = (module, name)
        if key in BUILTIN_TYPES:
            return self._remember(BUILTIN_TYPES[key], key)
        if key == ("builtins", "getattr"):
            return self._getattr
        if key == ("_codecs", "encode"):
            return _latin1
        if key == ("copyreg", "_reconstructor"):
            return self._reconstructor
        if key in PLAIN_CLASSES:
            return self._remember(self._class(key), key)
        raise UnsafePickle(f"calls {module}.{name}, which is not plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("holds a persistent id, which only a custom unpickler resolves")

    def _class(self, key: tuple[str, str]) -> Any:
        if self.real:
            try:
                return getattr(importlib.import_module(key[0]), key[1])
            except (ImportError, AttributeError):
                pass  # pendulum is not installed everywhere: an inert stand-in keeps the value's shape
        if key not in self.stand_ins:
            base: type[Recorder] = StandInZone if key[1] in TIME_ZONES else StandIn
            self.stand_ins[key] = type(key[1], (base,), {"pickled_as": key})
        return self.stand_ins[key]

    def _remember(self, value: Any, key: tuple[str, str]) -> Any:
        self.classes[id(value)] = key
        return value

    def _getattr(self, owner: Any, name: str, *default: Any) -> Any:
        key = self.classes.get(id(owner))
        if key not in UNPICKLE_METHODS or name != "_unpickle" or default:
            raise UnsafePickle(f"calls getattr({_name(owner)}, {name!r}), which is not plain data")
        if isinstance(owner, type) and issubclass(owner, Recorder):
            return owner.unpickle
        return getattr(owner, name)

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # copyreg's reconstructor (protocols 0 and 1) of an admitted class on `object` only.
        if id(cls) not in self.classes or base is not object or cls is object:
            raise UnsafePickle(f"calls copyreg._reconstructor({_name(cls)}, {_name(base)}), which is not plain data")
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


def _latin1(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    """How protocols 0-2 pickle bytes: `_codecs.encode(text, "latin1")`. Nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        raise UnsafePickle(f"calls _codecs.encode with {encoding!r}, which is not how bytes are pickled")
    return codecs.encode(text, "latin1")


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__


def looks_like_pickle(data: bytes) -> bool:
    """True when the value parses as a complete pickle stream (any protocol, 0 has no header):
    what `pickle.loads` would execute. Parsing runs nothing."""
    if not data:
        return False
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                return True
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, EOFError, IndexError):
        return False
    return False


def _load(data: bytes, where: str, *, real: bool) -> Any:
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickle(f"{where}: a pickled value of {len(data)} bytes, larger than {MAX_PICKLE_BYTES}")
    try:
        value = PlainDataUnpickler(bytes(data), real=real).load()
        _check_depth(value, where)
    except UnsafePickle as refusal:
        if str(refusal).startswith(where):
            raise
        raise UnsafePickle(f"{where}: {refusal}") from None
    except (RecursionError, MemoryError):
        raise UnsafePickle(f"{where}: a pickled value nested too deep or too large to check") from None
    except Exception as error:
        raise UnsafePickle(f"{where}: not a plain-data pickle ({type(error).__name__}: {str(error)[:200]})") from None
    return value


def _check_depth(value: Any, where: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafePickle(f"{where}: a pickled value nested too deep (more than {MAX_DEPTH} levels)")
        if id(item) in seen:
            continue
        seen.add(id(item))
        children: list[Any] = []
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = list(item)
        elif isinstance(item, Recorder):
            children = list(item.__dict__.values())
        stack.extend((child, depth + 1) for child in children)


def check_pickle(data: bytes, *, where: str) -> None:
    """Raise UnsafePickle, naming `where`, unless the value is plain data. Runs nothing."""
    _load(data, where, real=False)


def load_plain(data: bytes, *, where: str) -> Any:
    """The value, if it is plain data (real datetime, pendulum, ... objects where importable)."""
    return _load(data, where, real=True)


def repickle(value: Any, *, where: str) -> bytes:
    """Protocol 4: what every Python Airflow 2 runs on reads, and what Airflow's loaders accept."""
    try:
        return pickle.dumps(value, protocol=4)
    except (pickle.PicklingError, TypeError) as error:
        raise UnsafePickle(f"{where}: cannot be written back ({error})") from None


def check_table(table: Table, path: Path) -> int:
    """Every pickled value of a table's Parquet file, streamed: the columns Airflow declares as
    pickles (every value), and any other binary column's values that parse as a pickle (XComs
    under enable_xcom_pickling). Returns how many were checked; raises UnsafePickle naming the
    table, column and row."""
    binary = [c.name for c in table.columns if c.kind is Kind.BINARY]
    if not binary:
        return 0
    declared = {c for t, c in catalog.PICKLED_COLUMNS if t == table.name}
    naming = [c for c in _naming_columns(table) if c not in binary]
    checked = 0
    # Most values repeat (every task instance's executor_config is `{}`): a value admitted once is
    # admitted again without loading it, which keeps a million-row table to seconds.
    admitted: set[bytes] = set()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHECK_BATCH_ROWS, columns=naming + binary):
        for column in binary:
            where = f"{table.name}.{column}"
            for row, value in enumerate(batch.column(column).to_pylist()):
                if value is None or value in admitted:
                    continue
                if column not in declared and not looks_like_pickle(value):
                    continue
                try:
                    check_pickle(value, where=where)
                except UnsafePickle as refusal:
                    # Named only when refused: reading every row's key would double the cost.
                    label = ", ".join(f"{c}={_shown(batch.column(c)[row].as_py())}" for c in naming) or f"#{row}"
                    raise UnsafePickle(str(refusal).replace(where, f"{where} of row {label}", 1)) from None
                checked += 1
                if len(value) <= ADMITTED_VALUE_BYTES and len(admitted) < ADMITTED_VALUES:
                    admitted.add(value)
    return checked


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str | int) else str(value)


def _naming_columns(table: Table) -> list[str]:
    """What names a row to an operator: its surrogate id and its natural key."""
    columns = [table.surrogate_id] if table.surrogate_id else []
    for key in table.identities or [table.primary_key]:
        columns += [c for c in key if c not in columns]
    return [c for c in columns if table.has(c)]
