"""Airflow metadata backup, restore, verification and export (Parquet + manifest, Athena-ready)."""

from mwaa_control.metadata.memory import prefer_jemalloc

prefer_jemalloc()
