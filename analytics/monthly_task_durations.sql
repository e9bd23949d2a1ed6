-- Monthly task durations of one environment, from one metadata backup: per DAG, task and month,
-- the finished task instances, how many succeeded and failed, the min/max/avg/total run time and
-- the average and longest wait in the queue (queued to started), which shows when workers ran short.
--
-- Parameters, in this order (Athena execution parameters, or a DuckDB prepared statement):
--   1. environment  the MWAA environment name, e.g. 'data-platform'
--   2. backup_id    one backup of it, usually the latest, e.g. '20261121T213305Z-1a2b3c4d'
-- As in monthly_dag_performance.sql: literal values only (equality or an IN list), one backup per
-- environment.
--
-- task_instance keeps one row per task instance (each mapped index is one), for its latest try;
-- try_number says how many tries it took. Finished instances only (success, failed); one counts in
-- the month (UTC) it started, or ended when it never started. Durations are in seconds: duration
-- as Airflow recorded it, the queue wait at millisecond precision.
with finished_tasks as (
    select
        environment,
        dag_id,
        task_id,
        state,
        cast(date_trunc('month', coalesce(start_date, end_date)) as date) as run_month,
        duration,
        cast(date_diff('millisecond', queued_dttm, start_date) as double) / 1000 as queued_duration
    from task_instance
    where environment = ?
      and backup_id = ?
      and state in ('success', 'failed')
      and coalesce(start_date, end_date) is not null
)
select
    environment,
    dag_id,
    task_id,
    run_month,
    count(*) as num_executions,
    count_if(state = 'success') as num_success,
    count_if(state = 'failed') as num_failed,
    min(duration) as min_duration,
    max(duration) as max_duration,
    avg(duration) as avg_duration,
    sum(duration) as total_duration,
    avg(queued_duration) as avg_queued_duration,
    max(queued_duration) as max_queued_duration
from finished_tasks
group by environment, dag_id, task_id, run_month
order by environment, dag_id, task_id, run_month
