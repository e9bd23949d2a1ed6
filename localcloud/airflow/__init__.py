"""Real Apache Airflow behind the MWAA emulator's CLI endpoint and InvokeRestApi."""
