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

Admitted is not enough: a value Airflow cannot load (`datetime('x')`, a date of February 30, a
dict keyed by a list) crash-loops the scheduler that reads it. So every admitted class gets
exactly the argument shapes its own `__reduce__` writes: the standard library types are built for
real from checked primitive arguments (their C constructors run no user code) and their fields
checked again (the bytes form skips the range checks); pendulum's classes are inert stand-ins
whose arguments are checked the same way, so a check needs neither pendulum nor trust in it.

And checking is bounded, whatever the pickle: the pure-Python unpickler runs at most
`MAX_OPERATIONS` opcodes (a budget, deterministic, not a clock), integers are at most
`MAX_INT_BYTES` long, no call can allocate more than its pickled arguments (`bytearray(1 << 30)`
is refused), a dict or set refuses more than `MAX_SAME_HASH` keys of one hash (colliding integer
keys grow quadratically), and the value, expanded as whoever walks it sees it (shared references
counted each time: Airflow renders confs as JSON), has at most `MAX_ELEMENTS` elements,
`MAX_DEPTH` levels (inside pendulum's objects, as a copier meets them: `_check_shape`) and no
cycle. `load_plain` (used to drop task tokens from run confs) checks first, then builds real
values where the module is importable.
"""

from __future__ import annotations

import codecs
import copyreg
import datetime as dt
import decimal
import functools
import importlib
import io
import json
import pickle
import pickletools
import re
import struct
import zoneinfo
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any, ClassVar

from mwaa_control.metadata import catalog
from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.errors import UnsafePickle
from mwaa_control.metadata.memory import parquet_reader
from mwaa_control.metadata.schema import Kind, Table

MAX_PICKLE_BYTES = 64 << 20
"""Larger values are refused: no conf or executor config is near this, and loading is bounded."""
MAX_DEPTH = 1000
MAX_OPERATIONS = 4_000_000
"""Opcodes per value: about 10 MB of JSON-like pickle (2.6 MB, a million opcodes, checks in ~4 s)."""
MAX_ELEMENTS = 4_000_000
"""Elements per value, shared references counted each time they are reached."""
MAX_INT_BYTES = 1024
MAX_SAME_HASH = 16
MAX_TEXT_ARGUMENT = 1024
"""Strings a constructor parses (Decimal, a time zone key, a time zone name)."""
CHECK_BATCH_ROWS = 4096
ADMITTED_VALUES, ADMITTED_VALUE_BYTES = 10_000, 4096

# Binary columns Airflow does not declare as pickles, per restored table, and what they hold.
# Everything else binary in the supported releases is excluded (dag_pickle.pickle) or derived
# (serialized_dag.data_compressed), never restored. An undeclared binary column not listed here
# (a later release) is treated the same conservative way: JSON, or a pickle that must pass.
JSON_OR_PICKLE_COLUMNS = {
    ("xcom", "value"): "JSON (XComEncoder, UTF-8) or, under enable_xcom_pickling, a pickle",
}

# (module, name) -> what it is. Python 2 names (protocols 0-2 write them) are mapped first.
ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
PENDULUM_CLASSES = {
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
TIME_ZONES = {"Timezone", "FixedTimezone", "ZoneInfo", "timezone"}
# Time zones pickle as getattr(<class>, "_unpickle")(key, ...): a class method, looked up by name.
UNPICKLE_METHODS = {("zoneinfo", "ZoneInfo"), ("pendulum.tz.timezone", "Timezone")}
ZONE_KEY = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


def _refuse(why: str) -> UnsafePickle:
    return UnsafePickle(why)


def _only(args: tuple[Any, ...], what: str, *types: type) -> None:
    for argument in args:
        if argument is not None and not isinstance(argument, types):
            raise _refuse(f"{what} of a {type(argument).__name__} argument, which Airflow cannot load")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT_ARGUMENT:
        raise _refuse(f"{what} of {type(value).__name__} {str(value)[:40]!r}, which Airflow cannot load")
    return value


def _datetime(*args: Any) -> dt.datetime:
    """datetime(year, month, day[, hour, minute, second, microsecond, tzinfo]) or the pickle form
    datetime(bytes[, tzinfo]), as `datetime.__reduce__` writes it."""
    if args and isinstance(args[0], bytes | str):
        if len(args) > 2 or len(args[0]) != 10:
            raise _refuse("datetime of a malformed state, which Airflow cannot load")
        _only(args[1:], "datetime", tzinfo)
    else:
        if not 3 <= len(args) <= 8:
            raise _refuse(f"datetime of {len(args)} arguments, which Airflow cannot load")
        _only(args[:7], "datetime", int)
        _only(args[7:], "datetime", tzinfo)
    value = dt.datetime(*args)
    # The bytes form checks only the month: every other field is checked again here.
    fields = (value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond)
    dt.datetime(*fields, tzinfo=value.tzinfo, fold=value.fold)
    return value


def _date(*args: Any) -> dt.date:
    if args and isinstance(args[0], bytes | str):
        if len(args) != 1 or len(args[0]) != 4:
            raise _refuse("date of a malformed state, which Airflow cannot load")
    else:
        if len(args) != 3:
            raise _refuse(f"date of {len(args)} arguments, which Airflow cannot load")
        _only(args, "date", int)
    value = dt.date(*args)
    dt.date(value.year, value.month, value.day)
    return value


def _time(*args: Any) -> dt.time:
    if args and isinstance(args[0], bytes | str):
        if len(args) > 2 or len(args[0]) != 6:
            raise _refuse("time of a malformed state, which Airflow cannot load")
        _only(args[1:], "time", tzinfo)
    else:
        if len(args) > 5:
            raise _refuse(f"time of {len(args)} arguments, which Airflow cannot load")
        _only(args[:4], "time", int)
        _only(args[4:], "time", tzinfo)
    value = dt.time(*args)
    dt.time(value.hour, value.minute, value.second, value.microsecond, value.tzinfo, fold=value.fold)
    return value


def _timedelta(*args: Any) -> dt.timedelta:
    if len(args) > 3:
        raise _refuse(f"timedelta of {len(args)} arguments, which Airflow cannot load")
    _only(args, "timedelta", int)
    return dt.timedelta(*args)


def _timezone(*args: Any) -> dt.timezone:
    if not 1 <= len(args) <= 2 or not isinstance(args[0], dt.timedelta):
        raise _refuse("timezone without a timedelta offset, which Airflow cannot load")
    if len(args) == 2:
        _text(args[1], "timezone named by")
    return dt.timezone(*args)


def _decimal(*args: Any) -> decimal.Decimal:
    if len(args) != 1:
        raise _refuse(f"Decimal of {len(args)} arguments, which Airflow cannot load")
    return decimal.Decimal(_text(args[0], "Decimal"))  # InvalidOperation when it does not parse


def _zone_key(value: Any) -> str:
    """A key of the IANA database (zoneinfo's own check refuses paths) that exists, where this
    runtime has the database to say so (a Lambda image may not: then its shape only)."""
    key = _text(value, "time zone")
    if not ZONE_KEY.fullmatch(key) or ".." in key:
        raise _refuse(f"time zone {key[:40]!r}, which is not a time zone key")
    if _has_tz_database():
        zoneinfo.ZoneInfo(key)  # ZoneInfoNotFoundError when the database has no such zone
    return key


@functools.cache
def _has_tz_database() -> bool:
    try:
        zoneinfo.ZoneInfo("UTC")
    except zoneinfo.ZoneInfoNotFoundError:
        return False
    return True


def _zone(key: str, *, cached: bool = True) -> tzinfo:
    if not _has_tz_database():
        stand_in: tzinfo = ZoneInfoStandIn(key)
        return stand_in
    return zoneinfo.ZoneInfo(key) if cached else zoneinfo.ZoneInfo.no_cache(key)


def _zoneinfo(*args: Any) -> tzinfo:
    if len(args) != 1:
        raise _refuse(f"ZoneInfo of {len(args)} arguments, which Airflow cannot load")
    return _zone(_zone_key(args[0]))


def _zoneinfo_unpickle(*args: Any) -> tzinfo:
    """ZoneInfo._unpickle(key, from_cache), what ZoneInfo.__reduce__ writes."""
    if len(args) != 2 or not isinstance(args[1], int):
        raise _refuse("ZoneInfo._unpickle of malformed arguments, which Airflow cannot load")
    return _zone(_zone_key(args[0]), cached=bool(args[1]))


def _bytearray(*args: Any) -> bytearray:
    """bytearray(bytes) (protocols 3, 4) or bytearray(str, "latin-1") (0-2): never a size."""
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], bytes):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin-1", "latin1"):
        return bytearray(args[0], "latin-1")
    raise _refuse("bytearray of arguments other than its bytes, which only allocates")


def _complex(*args: Any) -> complex:
    if len(args) > 2:
        raise _refuse(f"complex of {len(args)} arguments")
    for argument in args:
        if not isinstance(argument, int | float) or (isinstance(argument, int) and argument.bit_length() > 64):
            raise _refuse("complex of arguments other than two numbers")
    return complex(*args)


class UnpickleBudget:
    """Keys of one dict or set by hash: more than MAX_SAME_HASH of one hash is a collision attack
    (a dict of them grows quadratically); an unhashable key raises when Airflow loads it."""

    def __init__(self) -> None:
        self.same_hash: dict[tuple[int, int], int] = {}
        self.containers: dict[int, Any] = {}  # held, so that no other container reuses an id

    def key(self, container: Any, key: Any) -> None:
        try:
            digest = hash(key)
        except TypeError:
            raise _refuse(f"a {type(key).__name__} as a dict key or set element, which Airflow cannot load") from None
        self.containers.setdefault(id(container), container)
        slot = (id(container), digest)
        count = self.same_hash.get(slot, 0) + 1
        if count > MAX_SAME_HASH:
            raise _refuse(f"more than {MAX_SAME_HASH} keys of one hash in a dict or set (a hash-collision bomb)")
        self.same_hash[slot] = count


def _set(budget: UnpickleBudget, kind: type) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        if not args:
            return kind()
        if len(args) != 1 or not isinstance(args[0], list | tuple | set | frozenset):
            raise _refuse(f"{kind.__name__} of arguments other than its elements")
        marker = object()
        for item in args[0]:
            budget.key(marker, item)
        return kind(args[0])

    return build


STDLIB: dict[tuple[str, str], Callable[..., Any]] = {
    ("datetime", "datetime"): _datetime,
    ("datetime", "date"): _date,
    ("datetime", "time"): _time,
    ("datetime", "timedelta"): _timedelta,
    ("datetime", "timezone"): _timezone,
    ("decimal", "Decimal"): _decimal,
    ("zoneinfo", "ZoneInfo"): _zoneinfo,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): _complex,
}


def _check_pendulum(key: tuple[str, str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """What pendulum's __reduce__ (3) or copyreg state (2) writes, checked with the stdlib."""
    name = key[1]
    if kwargs:
        raise _refuse(f"{name} with keyword arguments, which pendulum does not pickle")
    if name == "DateTime":
        _datetime(*args)
    elif name == "Date":
        _date(*args)
    elif name == "Time":
        _time(*args)
    elif name == "Duration":
        if len(args) > 9:
            raise _refuse(f"Duration of {len(args)} arguments, which Airflow cannot load")
        _only(args, "Duration", int, float)
        dt.timedelta(*args[:3])
    elif name in ("Interval", "Period"):
        if not 2 <= len(args) <= 3 or not all(isinstance(a, dt.date | StandIn) for a in args[:2]):
            raise _refuse(f"{name} of arguments other than two dates, which Airflow cannot load")
        _only(args[2:], name, int)
    elif name == "Timezone":
        if len(args) > 2:
            raise _refuse(f"Timezone of {len(args)} arguments, which Airflow cannot load")
        if args:
            _zone_key(args[0])
    elif name == "FixedTimezone":
        if len(args) > 3 or (args and (not isinstance(args[0], int) or abs(args[0]) >= 86400)):
            raise _refuse("FixedTimezone of an offset other than seconds within a day, which Airflow cannot load")
        if len(args) > 1 and args[1] is not None:
            _text(args[1], "FixedTimezone named by")
    else:  # pendulum 2's transition tables: numbers, names and other transitions
        _only(args, name, int, float, str, bool, Recorder, dt.datetime, dt.timedelta)


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
        if cls.pickled_as[1] == "Timezone":
            if len(args) != 2 or not isinstance(args[1], int):
                raise _refuse("Timezone._unpickle of malformed arguments, which Airflow cannot load")
            _zone_key(args[0])
            return cls(args[0])
        return cls(*args)


class StandIn(Recorder):
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _check_pendulum(cls.pickled_as, args, kwargs)
        instance = object.__new__(cls)
        instance.__dict__["arguments"] = (args, kwargs)
        return instance


class StandInZone(tzinfo, Recorder):
    """A time zone class: a tzinfo, so a real datetime accepts it (Airflow 2's `utcnow()` is a
    standard datetime in a pendulum time zone). Its offset is unknown here: hashing a datetime in
    it (a dict key) sees a naive one."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _check_pendulum(cls.pickled_as, args, kwargs)
        instance = tzinfo.__new__(cls)
        instance.__dict__["arguments"] = (args, kwargs)
        return instance

    def utcoffset(self, moment: Any) -> None:
        return None

    def dst(self, moment: Any) -> None:
        return None

    def tzname(self, moment: Any) -> None:
        return None


class ZoneInfoStandIn(StandInZone):
    """A ZoneInfo where this runtime has no time zone database: its key, checked for shape."""

    pickled_as = ("zoneinfo", "ZoneInfo")


class OperationBudgetExceeded(UnsafePickle):
    pass


def _counted(operation: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: PlainDataUnpickler) -> None:
        self.operations -= 1
        if self.operations < 0:
            raise OperationBudgetExceeded(
                f"more than {MAX_OPERATIONS} pickle operations (elements): too large to check, larger than any conf"
            )
        operation(self)

    return run


class PlainDataUnpickler(pickle._Unpickler):
    """Admits only plain data. `real`: build real objects where the module is importable.

    The pure-Python unpickler, so that every opcode counts against the budget and every dict and
    set insertion is checked; the C one offers no hook between opcodes."""

    # What the pure-Python base class sets up in load(); declared for the type checker.
    stack: list[Any]
    append: Callable[[Any], None]
    memo: dict[int, Any]
    read: Callable[[int], bytes]
    readline: Callable[[], bytes]
    pop_mark: Callable[[], list[Any]]

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = {
        code: _counted(operation) for code, operation in pickle._Unpickler.dispatch.items()
    }

    def __init__(self, data: bytes, *, real: bool) -> None:
        super().__init__(io.BytesIO(data))
        self.real = real
        self.operations = MAX_OPERATIONS
        self.budget = UnpickleBudget()
        self.classes: dict[int, tuple[str, str]] = {}
        self.stand_ins: dict[tuple[str, str], type[Recorder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = ALIASES.get(module, module)
        key = (module, name)
        if key == ("builtins", "set"):
            return self._remember(_set(self.budget, set), key)
        if key == ("builtins", "frozenset"):
            return self._remember(_set(self.budget, frozenset), key)
        if key == ("builtins", "object"):
            return self._remember(object, key)
        if key in STDLIB:
            return self._remember(STDLIB[key], key)
        if key == ("builtins", "getattr"):
            return self._getattr
        if key == ("_codecs", "encode"):
            return _latin1
        if key == ("copyreg", "_reconstructor"):
            return self._reconstructor
        if key in PENDULUM_CLASSES:
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
        if owner is _zoneinfo:
            return _zoneinfo_unpickle
        if isinstance(owner, type) and issubclass(owner, Recorder):
            return owner.unpickle
        # A real pendulum class (load_plain, after the check): its own method, on checked arguments.
        return getattr(owner, name)

    def _reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # copyreg's reconstructor (protocols 0 and 1) of an admitted class on `object` only.
        if id(cls) not in self.classes or base is not object or cls is object or not isinstance(cls, type):
            raise UnsafePickle(f"calls copyreg._reconstructor({_name(cls)}, {_name(base)}), which is not plain data")
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]

    # --- opcodes whose stock implementation trusts its input too much ---

    def load_long4(self) -> None:
        (size,) = struct.unpack("<i", self.read(4))
        if not 0 <= size <= MAX_INT_BYTES:
            raise UnsafePickle(f"an integer of {size} bytes (more than {MAX_INT_BYTES})")
        self.append(pickle.decode_long(self.read(size)))

    def load_put(self) -> None:
        # Text PUT takes any integer: huge ones collide in the memo. Real pickles count from 0.
        index = int(self.readline()[:-1])
        if not 0 <= index < 1 << 32:
            raise UnsafePickle(f"a memo index of {index.bit_length()} bits")
        self.memo[index] = self.stack[-1]

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        target = self.stack[-1]
        self._insert(target, [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._insert(self.stack[-1], items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        target: dict[Any, Any] = {}
        self._insert(target, items)
        self.append(target)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if not isinstance(target, set):
            raise UnsafePickle(f"adds set items to a {type(target).__name__}")
        for item in items:
            self.budget.key(target, item)
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        marker = object()
        for item in items:
            self.budget.key(marker, item)
        self.append(frozenset(items))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def load_ext1(self) -> None:
        raise UnsafePickle("uses the extension registry, which maps numbers to any global")

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        # Only the classes pickled with NEWOBJ: pendulum's stand-ins (or, in load_plain, the real
        # ones on checked arguments) and `object`. A checked constructor is called, never __new__.
        key = self.classes.get(id(cls))
        if key is None or not isinstance(cls, type):
            raise UnsafePickle(f"instantiates {_name(cls)} with NEWOBJ, which its pickles never do")
        if not self.real or key[0] == "builtins":
            return cls.__new__(cls, *args, **kwargs)
        _check_pendulum(key, tuple(args), dict(kwargs))
        return cls.__new__(cls, *args, **kwargs)

    def _insert(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, dict):
            raise UnsafePickle(f"sets items of a {type(target).__name__}")
        for index in range(0, len(items) - 1, 2):
            self.budget.key(target, items[index])
            target[items[index]] = items[index + 1]


for _code, _method in {
    pickle.LONG4: PlainDataUnpickler.load_long4,
    pickle.PUT: PlainDataUnpickler.load_put,
    pickle.SETITEM: PlainDataUnpickler.load_setitem,
    pickle.SETITEMS: PlainDataUnpickler.load_setitems,
    pickle.DICT: PlainDataUnpickler.load_dict,
    pickle.ADDITEMS: PlainDataUnpickler.load_additems,
    pickle.FROZENSET: PlainDataUnpickler.load_frozenset,
    pickle.NEWOBJ: PlainDataUnpickler.load_newobj,
    pickle.NEWOBJ_EX: PlainDataUnpickler.load_newobj_ex,
    pickle.EXT1: PlainDataUnpickler.load_ext1,
    pickle.EXT2: PlainDataUnpickler.load_ext1,
    pickle.EXT4: PlainDataUnpickler.load_ext1,
}.items():
    PlainDataUnpickler.dispatch[_code[0]] = _counted(_method)


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


def is_json(data: bytes) -> bool:
    """True when the value is UTF-8 JSON, what Airflow 2's XComEncoder writes. No JSON text is a
    pickle that runs anything: its first byte is either no opcode or one that fails on an empty
    stack (POP, POP_MARK, DUP, TUPLE; NONE then APPEND for NaN)."""
    try:
        json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def _load(data: bytes, where: str, *, real: bool) -> Any:
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickle(f"{where}: a pickled value of {len(data)} bytes, larger than {MAX_PICKLE_BYTES}")
    try:
        value = PlainDataUnpickler(bytes(data), real=real).load()
        _check_shape(value, where)
    except UnsafePickle as refusal:
        if str(refusal).startswith(where):
            raise
        raise UnsafePickle(f"{where}: {refusal}") from None
    except (RecursionError, MemoryError):
        raise UnsafePickle(f"{where}: a pickled value nested too deep or too large to check") from None
    except Exception as error:
        raise UnsafePickle(
            f"{where}: not a plain-data pickle Airflow can load ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    return value


def _check_shape(value: Any, where: str) -> None:
    """No cycle, and bounded for both kinds of code that walk the value once Airflow has loaded it.

    What renders it (the JSON of a conf in the UI and REST API, repr, ==) expands shared references
    and descends every plain container, and sees a pendulum value as one element (its text, its
    instant): at most MAX_ELEMENTS elements and MAX_DEPTH levels counted that way (a subtree shared
    N times is met N times: 60 levels of [a, a] are 2**60 elements).

    What copies it (pickle, deepcopy) descends into pendulum's objects too, but meets each object
    once, in order, and recurses only into what it has not met: at most MAX_DEPTH levels counted
    that way, which this walk measures by going the same way. pendulum 2 pickles a zoned time with
    its zone's transitions (~1000 for Europe/Paris), a list in which each references the one before:
    met in order, the one before is already met, and the chain is one level deep for a copier; the
    same chain written newest first is as deep as it is long, and refused."""
    rendered: dict[int, tuple[int, int]] = {}  # id -> (elements, levels) as a renderer meets it
    on_path: set[int] = set()
    keep: list[Any] = []  # ids stay unique while the walk holds the objects
    frames: list[tuple[Any, list[Any], list[int]]] = []  # (item, children, [next child, depth])

    def enter(item: Any, depth: int) -> None:
        key = id(item)
        if key in on_path:
            raise UnsafePickle(f"{where}: a value that contains itself, which Airflow cannot render")
        if depth > MAX_DEPTH:
            raise UnsafePickle(f"{where}: a pickled value nested too deep (more than {MAX_DEPTH} levels)")
        keep.append(item)
        children = _children(item)
        if children:
            on_path.add(key)
            frames.append((item, children, [0, depth]))
        else:
            rendered[key] = (1, 0)

    enter(value, 0)
    while frames:
        item, children, position = frames[-1]
        index, depth = position
        while index < len(children) and id(children[index]) in rendered:
            index += 1  # met before: a copier does not descend again
        if index < len(children):
            position[0] = index + 1
            enter(children[index], depth + 1)
            continue
        frames.pop()
        on_path.discard(id(item))
        if isinstance(item, Recorder):
            rendered[id(item)] = (1, 0)
            continue
        elements, levels = 1, 0
        for child in children:
            below = rendered[id(child)]
            elements += below[0]
            levels = max(levels, below[1] + 1)
        if elements > MAX_ELEMENTS:
            raise UnsafePickle(f"{where}: more than {MAX_ELEMENTS} elements once shared references are expanded")
        if levels > MAX_DEPTH:
            raise UnsafePickle(f"{where}: a pickled value nested too deep (more than {MAX_DEPTH} levels)")
        rendered[id(item)] = (elements, levels)


def _children(item: Any) -> list[Any]:
    """What a walker meets below `item`, in the order pickle writes it."""
    if isinstance(item, dict):
        return [part for pair in item.items() for part in pair]
    if isinstance(item, list | tuple | set | frozenset):
        return list(item)
    if isinstance(item, Recorder):
        return list(item.__dict__.values())
    if isinstance(item, dt.datetime | dt.time) and isinstance(item.tzinfo, Recorder):
        return [item.tzinfo]  # a stand-in time zone of a standard datetime: its state counts too
    return []


def check_pickle(data: bytes, *, where: str) -> None:
    """Raise UnsafePickle, naming `where`, unless the value is plain data Airflow can load. Runs nothing."""
    _load(data, where, real=False)


def load_plain(data: bytes, *, where: str) -> Any:
    """The value, if it is plain data (real datetime, pendulum, ... objects where importable):
    checked first with stand-ins, so a real class only ever sees checked arguments."""
    _load(data, where, real=False)
    return _load(data, where, real=True)


def repickle(value: Any, *, where: str) -> bytes:
    """Protocol 4: what every Python Airflow 2 runs on reads, and what Airflow's loaders accept."""
    try:
        return pickle.dumps(value, protocol=4)
    except (pickle.PicklingError, TypeError) as error:
        raise UnsafePickle(f"{where}: cannot be written back ({error})") from None


def check_table(table: Table, path: Path) -> int:
    """Every pickled value of a restored table's Parquet file, streamed: the columns Airflow
    declares as pickles (every non-null value), and the other binary columns (xcom.value: JSON,
    or a pickle under enable_xcom_pickling) every non-null value that is not JSON. Whether a value
    "looks like" a pickle is never asked: `pickle.loads` runs every opcode before it notices a
    missing STOP, so whatever is not JSON must pass the unpickler. Returns how many were checked;
    raises UnsafePickle naming the table, column and row. Derived and excluded tables
    (serialized_dag.data_compressed, dag_pickle) are never restored and not checked."""
    if table.role in (Role.DERIVED, Role.EXCLUDED):
        return 0
    binary = [c.name for c in table.columns if c.kind is Kind.BINARY]
    if not binary:
        return 0
    declared = {c for t, c in catalog.PICKLED_COLUMNS if t == table.name}
    naming = [c for c in _naming_columns(table) if c not in binary]
    checked = 0
    # Most values repeat (every task instance's executor_config is `{}`): a value admitted once is
    # admitted again without loading it, which keeps a million-row table to seconds.
    admitted: set[bytes] = set()
    for batch in parquet_reader(path).iter_batches(batch_size=CHECK_BATCH_ROWS, columns=naming + binary):
        for column in binary:
            where = f"{table.name}.{column}"
            for row, value in enumerate(batch.column(column).to_pylist()):
                if value is None or value in admitted:
                    continue
                if column not in declared and is_json(value):
                    continue
                try:
                    check_pickle(value, where=where)
                except UnsafePickle as refusal:
                    # Named only when refused: reading every row's key would double the cost.
                    label = ", ".join(f"{c}={_shown(batch.column(c)[row].as_py())}" for c in naming) or f"#{row}"
                    holds = JSON_OR_PICKLE_COLUMNS.get(
                        (table.name, column), "JSON or a pickle (a binary column this release does not list)"
                    )
                    detail = "" if column in declared else f" (this column holds {holds}: this value is neither)"
                    raise UnsafePickle(str(refusal).replace(where, f"{where} of row {label}", 1) + detail) from None
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
