"""Running Airflow commands on MWAA environments: the CLI token endpoint and InvokeRestApi."""
