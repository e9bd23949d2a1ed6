"""The restricted unpickler: what real Airflow 2 writes into its pickled columns passes, and
anything that would run code when Airflow unpickles it is refused, without ever being loaded by
the standard unpickler."""

from __future__ import annotations

import base64
import decimal
import json
import os
import pickle
import subprocess
import zlib
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from localcloud.airflow.backend import venv_for_release
from mwaa_control.metadata.errors import UnsafePickle
from mwaa_control.metadata.pickles import MAX_PICKLE_BYTES, check_pickle, load_plain, looks_like_pickle

DATA = Path(__file__).resolve().parent / "data"

# What Airflow 2's own column types write: dag_run.conf is a PickleType (pickle, highest protocol),
# task_instance.executor_config an ExecutorConfigType(pickler=dill). Values made by Airflow's own
# code paths: pendulum (Airflow's timezone helpers), nested dicts, a pod_override serialised the way
# ExecutorConfigType does before pickling.
WRITER = r"""
import datetime, decimal, json, sys, zoneinfo
import dill, pendulum
from sqlalchemy import PickleType
from sqlalchemy.dialects import sqlite
from airflow.utils import timezone
from airflow.utils.sqlalchemy import ExecutorConfigType

conf = {
    "nested": {"list": [1, 2.5, None, True, {"deep": "naïve ☃"}], "empty": {}, "tuple": (1, "a")},
    "logical": timezone.utcnow(),
    "paris": pendulum.datetime(2024, 3, 31, 2, 30, tz="Europe/Paris"),
    "fixed": pendulum.datetime(2024, 1, 1, tz=pendulum.FixedTimezone(-5 * 3600)),
    "day": pendulum.date(2024, 2, 29),
    "at": pendulum.time(23, 59, 59),
    "for": pendulum.duration(days=2, hours=3),
    "window": pendulum.interval(pendulum.datetime(2024, 1, 1), pendulum.datetime(2024, 2, 1)),
    "zone": pendulum.timezone("America/New_York"),
    "stdlib": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2), "X")),
    "zoneinfo": datetime.datetime(2024, 1, 2, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")),
    "date": datetime.date(2024, 1, 2), "time": datetime.time(1, 2), "delta": datetime.timedelta(seconds=3),
    "amount": decimal.Decimal("12.50"), "tags": {"a", "b"}, "frozen": frozenset({1}), "blob": b"\x00\xff",
}
executor_configs = [
    {},
    {"LocalExecutor": {"note": "naïve ☃"}, "when": pendulum.datetime(2024, 1, 1)},
    {"pod_override": {"__type": "k8s.V1Pod", "__var": {"spec": {"containers": [{"name": "base"}]}}}},
]
dialect = sqlite.dialect()
pickled = PickleType().bind_processor(dialect)
dilled = ExecutorConfigType(pickler=dill).bind_processor(dialect)
blobs = {"conf": pickled(conf).hex(), "conf_protocol_2": PickleType(protocol=2).bind_processor(dialect)(conf).hex()}
blobs.update({f"executor_config_{i}": dilled(c).hex() for i, c in enumerate(executor_configs)})
print(json.dumps(blobs))
"""


@pytest.fixture(scope="module", params=["2.9.2", "2.11.0"])
def airflow_pickles(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    venv = venv_for_release(request.param)
    home = tmp_path_factory.mktemp(f"pickles-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "AIRFLOW"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-W", "ignore", "-c", WRITER],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {k: bytes.fromhex(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def test_what_real_airflow_pickles_passes(airflow_pickles: dict[str, bytes]) -> None:
    assert set(airflow_pickles) >= {"conf", "conf_protocol_2", "executor_config_0", "executor_config_1"}
    for name, blob in airflow_pickles.items():
        assert looks_like_pickle(blob), name
        if name == "executor_config_2":
            continue  # a Kubernetes pod_override: below
        check_pickle(blob, where=name)  # raises if refused


def test_a_kubernetes_executor_config_is_refused(airflow_pickles: dict[str, bytes]) -> None:
    """MWAA runs Celery: a pod_override (serialised with Airflow's own enum in it) is refused."""
    with pytest.raises(UnsafePickle, match=r"airflow\.serialization\.enums\.Encoding"):
        check_pickle(airflow_pickles["executor_config_2"], where="task_instance.executor_config")


def test_plain_json_confs_load_as_the_values_airflow_wrote(airflow_pickles: dict[str, bytes]) -> None:
    loaded = load_plain(airflow_pickles["conf"], where="conf")
    assert loaded["nested"] == {"list": [1, 2.5, None, True, {"deep": "naïve ☃"}], "empty": {}, "tuple": (1, "a")}
    assert loaded["amount"] == decimal.Decimal("12.50") and loaded["tags"] == {"a", "b"}
    assert loaded["zoneinfo"] == datetime(2024, 1, 2, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))


def test_pendulum_2_pickles_pass() -> None:
    """Written by pendulum 2.1.2 (what Airflow before 2.8 used), which pickles its time zones with
    copyreg's reconstructor and their transition tables."""
    recorded = json.loads((DATA / "pendulum2_pickles.json").read_text())
    assert set(recorded["pickles"]) == {"0", "2", "4", "5"}
    for protocol, blob in recorded["pickles"].items():
        check_pickle(bytes.fromhex(blob), where=f"pendulum 2, protocol {protocol}")


def test_pendulum_2_zones_with_their_transition_chains_pass() -> None:
    """What Airflow 2.7 (pendulum 2) writes for a conf holding zoned times: every zone pickled with
    its whole transition table, ~1000 transitions for Europe/Paris, each referencing the previous
    one. Met in order the chain is one level deep for whatever copies the value; it was refused as
    1000 levels deep, which stopped every restore of a 2.7 environment with such a run."""
    recorded = json.loads((DATA / "pendulum2_pickles.json").read_text())["zoned"]
    assert set(recorded["pickles"]) == {"0", "2", "4"}
    for protocol, blob in recorded["pickles"].items():
        data = zlib.decompress(base64.b64decode(blob))
        assert data.count(b"Transition") >= 1 and len(data) > 100_000
        check_pickle(data, where=f"pendulum 2, protocol {protocol}")


PLAIN: list[Any] = [
    {"a": [1, 2.5, None, True, False, "naïve ☃", b"\x00"], "b": (1,), "c": {1, 2}, "d": frozenset({"x"})},
    datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=-3), "BRT")),
    datetime(2024, 1, 2, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    date(2024, 2, 29),
    time(1, 2, 3),
    timedelta(days=1, microseconds=5),
    decimal.Decimal("-0.000001"),
    complex(1, 2),
    bytearray(b"ab"),
    2**200,
    float("inf"),
]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_pass_in_every_protocol(protocol: int) -> None:
    for value in PLAIN:
        blob = pickle.dumps(value, protocol=protocol)
        check_pickle(blob, where="x")
        assert load_plain(blob, where="x") == value


class _Reduce:
    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.args


def _global(module: str, name: str, argument: str) -> bytes:
    """A protocol-0 pickle calling module.name(argument), the way an attacker writes it by hand."""
    return f"c{module}\n{name}\n(V{argument}\ntR.".encode()


HOSTILE = {
    "os.system": pickle.dumps({"conf": _Reduce(os.system, "id")}, protocol=5),
    "os.system protocol 0": pickle.dumps(_Reduce(os.system, "id"), protocol=0),
    "os.system by hand": _global("os", "system", "id"),
    "builtins.eval": pickle.dumps(_Reduce(eval, "1+1"), protocol=2),
    "builtins.exec": _global("builtins", "exec", "print(1)"),
    "__builtin__.eval": _global("__builtin__", "eval", "1"),
    "subprocess": _global("subprocess", "getoutput", "id"),
    "getattr of an allowed class": pickle.dumps(_Reduce(getattr, datetime, "now"), protocol=4),
    "getattr of a module": b"cbuiltins\ngetattr\n(cos\npath\nVjoin\ntR.",
    "pickle.loads, protocol 1": pickle.dumps(_Reduce(pickle.loads, b"N."), protocol=1),
    "copyreg._reconstructor of a class not allowed": (
        b"ccopy_reg\n_reconstructor\n(csubprocess\nPopen\nc__builtin__\nobject\nNtR."
    ),
    "kubernetes model": (b"\x80\x04\x8c\x1fkubernetes.client.models.v1_pod\x94\x8c\x05V1Pod\x94\x93\x94)\x81\x94."),
    "an arbitrary class": pickle.dumps(_Reduce(Path, "/etc/passwd"), protocol=4),
    "persistent id": b"\x80\x04Pabc\n.",
    "binary persistent id": b"\x80\x04\x8c\x03abc\x94Q.",
    "pickle.loads": pickle.dumps(_Reduce(pickle.loads, b"N."), protocol=4),
    "codecs.decode": _global("_codecs", "decode", "x"),
    "_codecs.encode with another codec": b"c_codecs\nencode\n(Vx\nVrot13\ntR.",
    "extension registry": b"\x80\x02\x82\x01.",
    "truncated": pickle.dumps({"a": 1}, protocol=4)[:-3],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_code_in_a_pickle_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafePickle, match=r"dag_run\.conf of run 7"):
        check_pickle(HOSTILE[name], where="dag_run.conf of run 7")
    with pytest.raises(UnsafePickle):
        load_plain(HOSTILE[name], where="dag_run.conf of run 7")


def test_the_refusal_names_what_was_called() -> None:
    with pytest.raises(UnsafePickle, match=r"dag_run\.conf of run 7: .*posix\.system|os\.system"):
        check_pickle(HOSTILE["os.system"], where="dag_run.conf of run 7")


def test_oversized_and_deeply_nested_pickles_are_refused() -> None:
    with pytest.raises(UnsafePickle, match="larger than"):
        check_pickle(b"\x80\x04" + b"N" * MAX_PICKLE_BYTES + b".", where="xcom.value")
    # Deep enough to overflow anything recursive on the way (comparison, repr, deallocation).
    with pytest.raises(UnsafePickle, match=r"nested|recursion|too deep"):
        check_pickle(b"\x80\x04" + b"]" * 200_000 + b"a" * 199_999 + b".", where="xcom.value")


def test_only_pickle_streams_are_taken_for_pickles() -> None:
    assert looks_like_pickle(pickle.dumps({"a": 1}, protocol=5))
    assert looks_like_pickle(HOSTILE["os.system by hand"])  # protocol 0 has no header
    for text in (b'{"a": 1}', b"[1, 2]", b"null", b"", b"\x00\x01garbage", "naïve ☃".encode()):
        assert not looks_like_pickle(text), text
