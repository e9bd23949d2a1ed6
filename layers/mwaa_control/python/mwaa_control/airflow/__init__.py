"""Running Airflow on MWAA environments: the CLI token endpoint and InvokeRestApi, triggering DAG runs,
and the task-token callbacks a DAG run reports back through."""
