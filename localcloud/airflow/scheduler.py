"""The scheduler stand-in of one emulated environment: one long-lived `runner.py serve` process in
the environment's Airflow virtualenv, fed by a background thread, so a trigger never waits for the
run it created and later triggers reuse the process (and its imported Airflow)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

RUNNER = Path(__file__).resolve().parent / "runner.py"


class RunnerFailed(RuntimeError):
    """The runner process died or answered with an error."""


class DagRunScheduler:
    """Executes queued runs of unpaused DAGs, as a scheduler would, whenever poked.

    `poke()` returns at once; the thread then asks the runner to execute every queued run (runs
    queued while it works are picked up by the next pass). `wait_idle()` blocks until nothing is
    pending or executing. The process starts on the first poke, never before."""

    def __init__(self, python: Path, environment: Callable[[], dict[str, str]], home: Path) -> None:
        self._python = python
        self._environment = environment
        self._home = home
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self._condition = threading.Condition()
        self._pending = False
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.executed: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def poke(self) -> None:
        with self._condition:
            if self._closed:
                return
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"dag-runs-{self._home.name}", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True when no pass is pending or running (False if `timeout` seconds passed first)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._pending = False
            self._condition.notify_all()
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()  # a task may be mid-run; the environment is going away with its database
            process.wait(timeout=30)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._log is not None:
            self._log.close()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if self._closed:
                    self._busy = False
                    self._condition.notify_all()
                    return
                self._pending, self._busy = False, True
            try:
                answer = self._request({"op": "run_queued"})
                if "error" in answer:
                    self.errors.append(str(answer["error"]))
                self.executed.extend(answer.get("runs", []))
            except (OSError, RunnerFailed, ValueError) as error:
                if not self._closed:
                    self.errors.append(f"{type(error).__name__}: {error}")
                self._process = None
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        process = self._started()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise RunnerFailed(f"the runner exited ({process.wait()}); see {self._home / 'logs' / 'runner.log'}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _started(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            (self._home / "logs").mkdir(parents=True, exist_ok=True)
            if self._log is None:
                self._log = (self._home / "logs" / "runner.log").open("a")
            self._process = subprocess.Popen(  # noqa: S603 - argv list, no shell
                [str(self._python), str(RUNNER), "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                env=self._environment(),
                cwd=self._home,
            )
        return self._process
