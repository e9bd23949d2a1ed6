"""What the security review found in the pickle checker: XCom pickles that never reach STOP,
values that pass the check but raise when Airflow loads them, and pickle bombs (hash-colliding
keys, huge allocations, shared-reference expansion). Each is refused quickly, naming the value;
what Airflow itself writes (JSON XComs, a few MB of JSON-like conf) still passes."""

from __future__ import annotations

import json
import pickle
import resource
import time
import zlib
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mwaa_control.metadata import pickles
from mwaa_control.metadata.catalog import Role
from mwaa_control.metadata.errors import UnsafePickle
from mwaa_control.metadata.pickles import check_pickle, check_table, load_plain
from mwaa_control.metadata.schema import Column, Kind, Table

# `pickle.loads` runs every opcode before it finds the stream truncated: no STOP is needed.
NO_STOP = b"cos\nsystem\n(S'id > /dev/null'\ntR"


def _xcom_table() -> Table:
    return Table(
        name="xcom",
        columns=[
            Column("dag_run_id", Kind.INTEGER, False),
            Column("task_id", Kind.TEXT, False),
            Column("key", Kind.TEXT, False),
            Column("value", Kind.BINARY, True),
        ],
        primary_key=("dag_run_id", "task_id", "key"),
        unique_keys=[],
        references=[],
        role=Role.HISTORY,
        why="values passed between tasks",
        classified=True,
    )


def _xcoms(tmp_path: Path, values: list[bytes | None]) -> Path:
    path = tmp_path / "xcom.parquet"
    table = pa.table(
        {
            "dag_run_id": pa.array(range(1, len(values) + 1), pa.int64()),
            "task_id": pa.array(["load"] * len(values)),
            "key": pa.array(["return_value"] * len(values)),
            "value": pa.array(values, pa.binary()),
        }
    )
    pq.write_table(table, path)
    return path


# --- finding 3: every non-JSON XCom value is a pickle to check -------------------------------


def test_an_xcom_pickle_without_stop_is_refused(tmp_path: Path) -> None:
    path = _xcoms(tmp_path, [json.dumps({"a": 1}).encode(), NO_STOP])
    with pytest.raises(UnsafePickle, match=r"xcom\.value of row .*dag_run_id=2.*os\.system"):
        check_table(_xcom_table(), path)


def test_an_xcom_that_is_neither_json_nor_a_pickle_is_refused(tmp_path: Path) -> None:
    path = _xcoms(tmp_path, [b"\x00\x01 not json, not a pickle"])
    with pytest.raises(UnsafePickle, match=r"xcom\.value of row .*dag_run_id=1"):
        check_table(_xcom_table(), path)


def test_json_and_plain_pickle_xcoms_pass(tmp_path: Path) -> None:
    """What Airflow 2 writes: UTF-8 JSON (XComEncoder), or a pickle under enable_xcom_pickling."""
    values: list[bytes | None] = [
        json.dumps({"rows": 3, "path": "s3://b/k", "ok": True}).encode(),
        json.dumps("naïve ☃", ensure_ascii=False).encode("utf-8"),
        b"null",
        b"42",
        None,
        pickle.dumps({"rows": 3, "when": datetime(2024, 1, 2, tzinfo=UTC)}, protocol=4),
    ]
    assert check_table(_xcom_table(), _xcoms(tmp_path, values)) == 1  # the pickle; JSON is not one


def test_binary_columns_of_tables_never_restored_are_not_checked(tmp_path: Path) -> None:
    """serialized_dag.data_compressed (zlib, derived) and dag_pickle (excluded): never restored."""
    path = tmp_path / "serialized_dag.parquet"
    pq.write_table(
        pa.table({"dag_id": ["etl"], "data_compressed": pa.array([zlib.compress(b"{}")], pa.binary())}), path
    )
    for role in (Role.DERIVED, Role.EXCLUDED):
        table = Table(
            name="serialized_dag",
            columns=[Column("dag_id", Kind.TEXT, False), Column("data_compressed", Kind.BINARY, True)],
            primary_key=("dag_id",),
            unique_keys=[],
            references=[],
            role=role,
            why="re-serialised from the DAG files",
            classified=True,
        )
        assert check_table(table, path) == 0
    with pytest.raises(UnsafePickle, match="neither"):  # the same bytes in a restored table are refused
        check_table(_xcom_table(), _xcoms(tmp_path, [zlib.compress(b"{}")]))


# --- finding 4: values the checker admitted that raise when Airflow loads them ---------------


def _reduce(module: str, name: str, *args: Any) -> bytes:
    """A protocol-2 pickle of module.name(*args), args pickled as plain data."""
    body = pickle.dumps(args, protocol=2)[2:-1]  # the tuple, without PROTO and STOP
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + body + b"R."


CRASHING = {
    "datetime('x')": _reduce("datetime", "datetime", "x"),
    "datetime month 13": _reduce("datetime", "datetime", 2024, 13, 1),
    "datetime of a float": _reduce("datetime", "datetime", 2024.5, 1, 1),
    "datetime of bytes with hour 99": _reduce("datetime", "datetime", b"\x07\xe8\x01\x02\x63\x00\x00\x00\x00\x00"),
    "datetime of bytes too short": _reduce("datetime", "datetime", b"\x07\xe8\x01"),
    "datetime with a string tzinfo": _reduce("datetime", "datetime", 2024, 1, 1, 0, 0, 0, 0, "UTC"),
    "date('x')": _reduce("datetime", "date", "x"),
    "date Feb 30": _reduce("datetime", "date", 2023, 2, 30),
    "time 25h": _reduce("datetime", "time", 25, 0),
    "timedelta of a string": _reduce("datetime", "timedelta", "1"),
    "timedelta out of range": _reduce("datetime", "timedelta", 10**10),
    "timezone of an int": _reduce("datetime", "timezone", 5),
    "Decimal that does not parse": _reduce("decimal", "Decimal", "twelve"),
    "Decimal of a list": _reduce("decimal", "Decimal", [1]),
    "ZoneInfo of a path": b"\x80\x02cbuiltins\ngetattr\nczoneinfo\nZoneInfo\nX\t\x00\x00\x00_unpickle\x86R"
    b"X\x0b\x00\x00\x00/etc/passwdK\x01\x86R.",
    "ZoneInfo unknown": b"\x80\x02cbuiltins\ngetattr\nczoneinfo\nZoneInfo\nX\t\x00\x00\x00_unpickle\x86R"
    b"X\x07\x00\x00\x00Nowhere\x88\x86R.",
    "pendulum DateTime('x')": _reduce("pendulum.datetime", "DateTime", "x"),
    "pendulum DateTime month 13": _reduce("pendulum.datetime", "DateTime", 2024, 13, 1, 0, 0, 0, 0, None),
    "pendulum Date(1, 2)": _reduce("pendulum.date", "Date", "x", 2),
    "pendulum Time('x')": _reduce("pendulum.time", "Time", "x"),
    "pendulum Duration('x')": _reduce("pendulum.duration", "Duration", "x"),
    "pendulum FixedTimezone('x')": _reduce("pendulum.tz.timezone", "FixedTimezone", "x"),
    "pendulum Timezone unknown": b"\x80\x02cbuiltins\ngetattr\ncpendulum.tz.timezone\nTimezone\nX\t\x00\x00\x00"
    b"_unpickle\x86RX\x07\x00\x00\x00Nowhere\x88\x86R.",
    "set of a list of lists (unhashable)": _reduce("builtins", "set", [[1]]),
    "dict keyed by a list": b"\x80\x02}]K\x01aK\x02s.",
    "complex('x')": _reduce("builtins", "complex", "x"),
    "bytearray of a float": _reduce("builtins", "bytearray", 1.5),
}


@pytest.mark.parametrize("name", sorted(CRASHING))
def test_a_value_airflow_cannot_load_is_refused(name: str) -> None:
    with pytest.raises(UnsafePickle, match=r"dag_run\.conf of run 7"):
        check_pickle(CRASHING[name], where="dag_run.conf of run 7")


def test_a_crashing_conf_is_refused_naming_table_column_and_row(tmp_path: Path) -> None:
    table = _xcom_table()
    path = _xcoms(tmp_path, [pickle.dumps({"a": 1}), CRASHING["datetime('x')"]])
    with pytest.raises(UnsafePickle, match=r"xcom\.value of row .*dag_run_id=2"):
        check_table(table, path)


def test_what_the_stdlib_writes_still_loads_as_itself() -> None:
    values = [
        datetime(2024, 2, 29, 23, 59, 59, 999999),
        datetime(2024, 1, 2, tzinfo=UTC),
        date(1, 1, 1),
        timedelta(days=-999999999),
        Decimal("-1.5E+3"),
        Decimal("NaN"),
    ]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        for value in values:
            blob = pickle.dumps(value, protocol=protocol)
            check_pickle(blob, where="x")
            assert str(load_plain(blob, where="x")) == str(value)


# --- finding 6: pickle bombs are refused fast and small --------------------------------------


def _colliding_dict(keys: int) -> bytes:
    modulus = (1 << 61) - 1  # hash(k * modulus) == 0 for every k
    body = b"".join(pickle.dumps(k * modulus, protocol=4)[2:-1] + b"N" for k in range(1, keys + 1))
    return b"\x80\x04}(" + body + b"u."


def _seconds(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def test_hash_colliding_keys_are_refused_quickly() -> None:
    blob = _colliding_dict(40_000)

    def check() -> None:
        with pytest.raises(UnsafePickle, match=r"xcom\.value"):
            check_pickle(blob, where="xcom.value")

    assert _seconds(check) < 2


def test_huge_allocations_are_refused_before_they_happen() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bombs = [
        b"\x80\x04cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85R.",  # bytearray(1 GiB)
        b"\x80\x04cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85\x81.",  # the same through NEWOBJ
        _reduce("builtins", "complex", "1" * 5_000_000),
        b"\x80\x04\x8b" + (1 << 20).to_bytes(4, "little") + b"\x01" * (1 << 20) + b".",  # LONG4 of 1 MiB
        b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b".",  # BINBYTES8 claiming 4 EiB
    ]
    for bomb in bombs:
        with pytest.raises(UnsafePickle, match=r"dag_run\.conf"):
            check_pickle(bomb, where="dag_run.conf")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200


def test_shared_references_cannot_expand_into_billions_of_elements() -> None:
    """[a, a] with a = [b, b] ... 60 times: 60 list objects, 2**60 elements for whoever walks it
    (Airflow's JSON rendering of the conf in the UI and REST API)."""
    body = b"\x80\x04]\x94"  # level 0: an empty list, memo 0
    for level in range(1, 61):
        body += b"]\x94(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"e"  # memo level
    with pytest.raises(UnsafePickle, match="elements"):
        check_pickle(body + b".", where="dag_run.conf")


def test_opcode_floods_are_bounded() -> None:
    blob = b"\x80\x04" + b"N0" * 5_000_000 + b"N."  # 10 M opcodes, 10 MB

    def check() -> None:
        with pytest.raises(UnsafePickle, match=r"elements|operations"):
            check_pickle(blob, where="dag_run.conf")

    assert _seconds(check) < 10


def test_a_big_json_like_conf_still_passes() -> None:
    conf = {"rows": [{"id": i, "name": f"row-{i}", "tags": ["a", "b"], "score": i / 3} for i in range(60_000)]}
    blob = pickle.dumps(conf, protocol=4)
    assert len(blob) > 2_000_000
    assert _seconds(lambda: check_pickle(blob, where="dag_run.conf")) < 15
    assert load_plain(blob, where="dag_run.conf") == conf


def test_without_a_time_zone_database_zone_keys_are_still_checked_for_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime without /usr/share/zoneinfo (a slim Lambda image) cannot tell whether a zone
    exists: it still refuses what is not a key, and admits a zone it cannot resolve."""
    monkeypatch.setattr(pickles, "_has_tz_database", lambda: False)
    check_pickle(pickle.dumps(datetime(2024, 1, 2, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")), protocol=4), where="x")
    with pytest.raises(UnsafePickle, match="not a time zone key"):
        check_pickle(CRASHING["ZoneInfo of a path"], where="x")


# --- pendulum 2's transition chains: flat in order, deep when nested --------------------------

TRANSITION = b"cpendulum.tz.zoneinfo.transition\nTransition\n"
PREVIOUS = b"X\x09\x00\x00\x00_previous"


def _transitions(count: int, *, nested: bool) -> bytes:
    """A protocol-2 list of `count` pendulum 2 Transitions, each one's `_previous` the one before,
    as pendulum writes them (in order: the one before is a memo reference) or newest first (each
    written inside the next, `count` levels deep)."""
    body = b"\x80\x02" + TRANSITION + b"q\x00" + b"0"  # the class, memo 0, popped
    state = b"}(" + PREVIOUS  # EMPTY_DICT MARK "_previous" ... SETITEMS BUILD
    if nested:
        chain = (b"h\x00)\x81" + state) * count + b"N" + b"ub" * count
        return body + b"]" + chain + b"a."
    body += b"](" + b"h\x00)\x81" + state + b"Nub" + b"r\x01\x00\x00\x00"  # the first, memo 1
    for index in range(2, count + 1):
        body += b"h\x00)\x81" + state + b"j" + (index - 1).to_bytes(4, "little") + b"ub"
        body += b"r" + index.to_bytes(4, "little")
    return body + b"e."


def test_a_transition_chain_in_order_passes_and_nested_is_refused() -> None:
    check_pickle(_transitions(5_000, nested=False), where="dag_run.conf")
    with pytest.raises(UnsafePickle, match=r"dag_run\.conf: .*nested too deep"):
        check_pickle(_transitions(5_000, nested=True), where="dag_run.conf")


def test_a_deep_chain_in_a_time_zone_of_a_standard_datetime_is_refused() -> None:
    """The stand-in zone of a standard datetime is walked too: a copier descends into it."""
    chain = _transitions(2_000, nested=True)[2:-1]  # the list, without PROTO and STOP
    zone = b"cpendulum.tz.timezone\nTimezone\n)\x81}(X\x0c\x00\x00\x00_transitions" + chain + b"ub"
    when = b"\x80\x02cdatetime\ndatetime\n(M\xe8\x07K\x01K\x01K\x00K\x00K\x00K\x00" + zone + b"tR."
    with pytest.raises(UnsafePickle, match="nested too deep"):
        check_pickle(when, where="dag_run.conf")


def _nested_lists(depth: int) -> bytes:
    return b"]" * depth + b"a" * (depth - 1)


def test_a_shared_subtree_is_measured_where_it_is_deepest() -> None:
    """x (900 levels) met one level down and again 500 levels down, in either order: a JSON
    encoder meets it 1400 levels down (RecursionError when Airflow renders the conf), however
    shallow it was met first."""
    x = _nested_lists(900) + b"\x94"  # memo 0
    shallow_first = b"\x80\x04]" + x + b"a" + b"]" * 500 + b"h\x00" + b"a" * 501 + b"."
    deep_first = b"\x80\x04]" + b"]" * 500 + x + b"a" * 501 + b"h\x00a."
    for blob in (shallow_first, deep_first):
        with pytest.raises(UnsafePickle, match="nested too deep"):
            check_pickle(blob, where="dag_run.conf")
    check_pickle(b"\x80\x04]" + x + b"a" + b"]" * 50 + b"h\x00" + b"a" * 51 + b".", where="dag_run.conf")
