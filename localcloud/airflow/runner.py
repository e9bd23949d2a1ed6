"""Runs inside an Airflow virtualenv (not this project's): one REST API call against the real
Airflow app of AIRFLOW_HOME, in-process (Flask test client on Airflow 2, FastAPI on Airflow 3).

Usage: python runner.py rest '{"method": ..., "path": ..., "query": {...}, "body": ...}'
Prints one JSON line: {"status": int, "body": str}.
"""

import json
import logging
import os
import sys


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


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    mode, payload = sys.argv[1], json.loads(sys.argv[2])
    result = rest(payload) if mode == "rest" else {"status": 400, "body": f"unknown mode {mode}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
