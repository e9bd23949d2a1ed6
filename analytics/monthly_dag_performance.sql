-- Monthly DAG performance of one environment, from one metadata backup: per DAG and month, the
-- finished runs, how many succeeded and failed, the success rate, the min/max/avg run duration and
-- the change of the average against the DAG's previous month with finished runs.
--
-- Parameters, in this order (Athena execution parameters, or a DuckDB prepared statement):
--   1. environment  the MWAA environment name, e.g. 'data-platform'
--   2. backup_id    one backup of it, usually the latest, e.g. '20261121T213305Z-1a2b3c4d'
-- Athena's injected partition projection needs literal values for both: an equality, or an IN
-- list of literals, never a subquery (so the latest backup id is found by listing the backup
-- prefixes first). Every backup is a full snapshot: an IN list of backup ids counts runs twice.
--
-- Finished runs only (success, failed): queued and running runs are left out. A run counts in the
-- month (UTC) it started; one failed before it started, in the month it ended (its duration is
-- unknown). Durations are in seconds, at millisecond precision (Athena reads timestamps as
-- milliseconds). prev_month_avg_duration and var_duration are NULL in a DAG's first month;
-- prev_run_month says which month they compare against when the DAG had no runs in between.
-- Written in the SQL that Athena (Trino) and DuckDB share; tests/analytics runs it on DuckDB.
with finished_runs as (
    select
        environment,
        dag_id,
        state,
        cast(date_trunc('month', coalesce(start_date, end_date)) as date) as run_month,
        cast(date_diff('millisecond', start_date, end_date) as double) / 1000 as duration
    from dag_run
    where environment = ?
      and backup_id = ?
      and state in ('success', 'failed')
      and coalesce(start_date, end_date) is not null
),
monthly as (
    select
        environment,
        dag_id,
        run_month,
        count(*) as num_executions,
        count_if(state = 'success') as num_success,
        count_if(state = 'failed') as num_failed,
        100 * cast(count_if(state = 'success') as double) / count(*) as success_rate,
        min(duration) as min_duration,
        max(duration) as max_duration,
        avg(duration) as avg_duration
    from finished_runs
    group by environment, dag_id, run_month
)
select
    environment,
    dag_id,
    run_month,
    num_executions,
    num_success,
    num_failed,
    success_rate,
    min_duration,
    max_duration,
    avg_duration,
    lag(run_month) over (partition by environment, dag_id order by run_month) as prev_run_month,
    lag(avg_duration) over (partition by environment, dag_id order by run_month) as prev_month_avg_duration,
    avg_duration - lag(avg_duration) over (partition by environment, dag_id order by run_month) as var_duration
from monthly
order by environment, dag_id, run_month
