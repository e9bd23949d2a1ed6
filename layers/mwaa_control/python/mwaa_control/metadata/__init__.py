"""Airflow metadata backup, restore, verification and export (Parquet + manifest, Athena-ready)."""
