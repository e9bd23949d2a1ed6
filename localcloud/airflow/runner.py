"""Runs inside an Airflow virtualenv (not this project's), against the Airflow of AIRFLOW_HOME.

Three modes:

- `python runner.py rest '{"method": ..., "path": ..., "query": {...}, "body": ...}'`: one REST API
  call against the real Airflow app, in-process (Flask test client on Airflow 2, FastAPI on
  Airflow 3). Prints one JSON line: {"status": int, "body": str}.
- `python runner.py parse`: one DAG-processor pass over the DAG folder (Airflow 2; see parse()).
- `python runner.py serve`: a long-lived scheduler stand-in for one environment. It reads JSON
  requests from stdin, one a line, and answers each with one JSON line on its original stdout
  (task output is sent to stderr, so it cannot corrupt the protocol):
    {"op": "run_queued"} -> {"runs": [{"dag_id", "run_id", "state"}, ...]}: every queued run of an
        unpaused DAG (what a scheduler would start), oldest first, executed to its end;
    {"op": "stop"} -> the process exits.

Why not `airflow dags test`: it (and DAG.test() behind it, on 2.9 to 3.0) deletes the run it finds
and creates its own with another run id, so a run triggered through the REST API or `dags trigger`
would vanish. Why not a real scheduler: on Airflow 3 it needs an API server and a task supervisor
per task. So the loop below is DAG.test()'s own minimal scheduling loop (update the run's state,
schedule what is ready, run each ready task in this process with DAG.test()'s task runner, inline
triggers), applied to the existing run: its run id, conf and task instances stay as triggered.

On Airflow 3 a real worker runs task code in a process whose ORM the task supervisor removed
(`block_orm_access`): `airflow.settings.engine` and the sessions are gone. DAG.test()'s in-process
runner does not do that, so `serve` models it (`block_orm_in_task_code`): while task code runs (the
Task SDK's `run` and `finalize`, which include the task's callbacks), the thread running it cannot
reach Airflow's engine or sessions; the execution API the task talks to serves it from other threads,
as the API server would. A DAG that would use the ORM on Airflow 3 therefore fails here too.
"""

import json
import logging
import os
import sys
import threading
import time
import types

# A run whose unfinished tasks cannot be scheduled (e.g. waiting on a reschedule) is left running
# after this long without progress, instead of holding the runner forever.
STALL_SECONDS = 60.0


def rest(request: dict) -> dict:
    import airflow

    method, path = request["method"], request["path"]
    query, body = request.get("query") or {}, request.get("body")
    if int(airflow.__version__.split(".")[0]) >= 3:
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        client = TestClient(create_app())
        response = client.request(method, "/api/v2" + path, params=query, json=body)
        return {"status": response.status_code, "body": response.text}
    from airflow.www.app import create_app

    app = create_app(testing=True)
    with app.test_client() as client:
        response = client.open("/api/v1" + path, method=method, query_string=query, json=body)
        return {"status": response.status_code, "body": response.get_data(as_text=True)}


def _version() -> tuple[int, int]:
    import airflow

    major, minor = airflow.__version__.split(".")[:2]
    return int(major), int(minor)


def _queued_runs() -> list:
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(DagRun.dag_id, DagRun.run_id, DagModel.fileloc)
            .join(DagModel, DagModel.dag_id == DagRun.dag_id)
            .where(DagRun.state == DagRunState.QUEUED, DagModel.is_paused.is_(False))
            .order_by(DagRun.id)
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def _load_dag(dag_id: str, fileloc: str):
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=fileloc, include_examples=False)
    dag = bag.dags.get(dag_id)
    if dag is None:
        raise LookupError(f"DAG {dag_id} is not defined in {fileloc}: {bag.import_errors}")
    return dag


def _run_task_instance(ti, session) -> None:
    if _version()[0] >= 3:
        from airflow.sdk.definitions.dag import _run_task

        _run_task(ti=ti, run_triggerer=True)
    else:
        from airflow.models.dag import _run_task

        _run_task(ti=ti, inline_trigger=True, session=session)


def execute_run(dag_id: str, run_id: str, fileloc: str) -> str:
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.utils import timezone
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import select

    dag = _load_dag(dag_id, fileloc)
    counts_try_when_scheduled = _version() >= (2, 10)
    session = settings.Session()
    try:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None or run.state != DagRunState.QUEUED:
            return str(run.state) if run is not None else "missing"
        run.state = DagRunState.RUNNING
        run.start_date = timezone.utcnow()
        session.commit()
        run.dag = dag
        progress = time.monotonic()
        while run.state == DagRunState.RUNNING:
            session.expire_all()
            ready, _ = run.update_state(session=session)
            for ti in ready:
                if counts_try_when_scheduled and ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                    ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            instances = run.get_task_instances(session=session)
            scheduled = [ti for ti in instances if ti.state == TaskInstanceState.SCHEDULED]
            if scheduled:
                progress = time.monotonic()
            elif any(ti.state not in State.finished for ti in instances):
                if time.monotonic() - progress > STALL_SECONDS:
                    break
                time.sleep(1)
            for ti in scheduled:
                task_id = ti.task_id
                ti.task = dag.task_dict[task_id]
                try:
                    _run_task_instance(ti, session)
                except Exception:
                    session.rollback()
                    logging.getLogger(__name__).exception("task %s of %s failed", task_id, run_id)
        session.expire_all()
        return str(session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)))
    finally:
        session.close()


def run_queued() -> dict:
    executed = []
    for dag_id, run_id, fileloc in _queued_runs():
        try:
            state = execute_run(dag_id, run_id, fileloc)
        except Exception as error:
            logging.getLogger(__name__).exception("run %s of %s could not be executed", run_id, dag_id)
            state = f"error: {type(error).__name__}"
        executed.append({"dag_id": dag_id, "run_id": run_id, "state": state})
    return {"runs": executed}


_TASK_CODE = threading.local()
BLOCKED_SETTINGS = frozenset(
    {"engine", "async_engine", "Session", "AsyncSession", "NonScopedSession", "configure_orm", "SQL_ALCHEMY_CONN"}
)
ORM_BLOCKED = "Database access is disabled from DAGs and Triggers (Airflow 3 task code; emulated)"


def _in_task_code(function):
    def running_task_code(*args, **kwargs):
        _TASK_CODE.active = True
        try:
            return function(*args, **kwargs)
        finally:
            _TASK_CODE.active = False

    return running_task_code


def block_orm_in_task_code() -> None:
    """Airflow 3's ORM block for task code, in this shared process: per thread and only while the
    Task SDK runs a task (the scheduler loop around it keeps its own sessions)."""
    from airflow import settings
    from airflow.sdk.execution_time import task_runner

    class _SettingsWithoutOrmForTasks(types.ModuleType):
        def __getattribute__(self, name: str):
            if name in BLOCKED_SETTINGS and getattr(_TASK_CODE, "active", False):
                raise RuntimeError(ORM_BLOCKED)
            return super().__getattribute__(name)

    settings.__class__ = _SettingsWithoutOrmForTasks
    finalize = task_runner.finalize

    def finalize_as_a_worker_does(ti, state, context, log, error=None):
        # A worker's task_runner.main() puts the task's error in the context before finalize (the
        # failure callbacks read it); DAG.test()'s in-process supervisor does not.
        context["exception"] = error
        return finalize(ti, state, context, log, error)

    # InProcessTestSupervisor imports both from the module on each task: the wrapped ones run.
    task_runner.run = _in_task_code(task_runner.run)
    task_runner.finalize = _in_task_code(finalize_as_a_worker_does)


def _register_user_table() -> None:
    """Airflow 2's task_instance_note references ab_user, a table of the FAB auth manager's models:
    without them mapped (the CLI and web server import them), the first task-state flush fails."""
    if _version()[0] >= 3:
        return
    try:
        import airflow.providers.fab.auth_manager.models
    except ImportError:
        import airflow.auth.managers.fab.models  # noqa: F401


def parse() -> dict:
    """One DAG-processor pass over the DAG folder on Airflow 2: every file processed in this
    process (DAGs and serialised DAGs saved, import errors recorded), and only then an exit. One
    `scheduler --num-runs 1` loop may end before a slow file (one importing a large plugins
    package) is processed, and it would start queued runs too."""
    from airflow import settings
    from airflow.dag_processing.processor import DagFileProcessor
    from airflow.utils.file import list_py_file_paths

    _register_user_table()
    log = logging.getLogger("airflow.processor")
    files = list_py_file_paths(settings.DAGS_FOLDER, include_examples=False)
    for path in files:
        DagFileProcessor(dag_ids=None, dag_directory=settings.DAGS_FOLDER, log=log).process_file(
            file_path=path, callback_requests=[]
        )
    return {"status": 200, "body": json.dumps({"files": len(files)})}


def serve() -> None:
    _register_user_table()
    if _version()[0] >= 3:
        block_orm_in_task_code()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    while line := sys.stdin.readline():
        request = json.loads(line)
        if request.get("op") == "stop":
            break
        try:
            answer = run_queued() if request.get("op") == "run_queued" else {"error": f"unknown op {request}"}
        except Exception as error:
            logging.getLogger(__name__).exception("runner request failed")
            answer = {"error": f"{type(error).__name__}: {error}"[:2000]}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()
    protocol.flush()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve()
        os._exit(0)
    logging.disable(logging.CRITICAL)
    if mode == "parse":
        result = parse()
    else:
        payload = json.loads(sys.argv[2])
        result = rest(payload) if mode == "rest" else {"status": 400, "body": f"unknown mode {mode}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
