-- The nightly job's tables for Amazon Athena / the AWS Glue catalog (README "The tables in BI tools").
-- Replace s3://factory-quality/musc with the job's output.prefix, then run each statement once.
-- Stored metrics are fractions 0-1. Column lists match pipeline/job/scores_table.py (checked by
-- tests/test_bi.py).

CREATE DATABASE IF NOT EXISTS musc;

-- Scores, one row per input image. Partition projection: new nights need no crawler or MSCK REPAIR.
-- group_name is injected: every query names its group, in the stored (URL-encoded) form.
CREATE EXTERNAL TABLE IF NOT EXISTS musc.scores (
  uri string,
  subset_id int,
  subset_size int,
  score_raw double,
  score double,
  rank_in_group int,
  percentile_in_group double,
  is_anomaly boolean,
  flag_policy string,
  map_uri string,
  label tinyint,
  backbone string,
  scores_meaningful boolean,
  config_hash string,
  run_id string,
  scored_at timestamp,
  status string,
  error string,
  match_radius int
)
PARTITIONED BY (run_date date, group_name string)
STORED AS PARQUET
LOCATION 's3://factory-quality/musc/scores/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.run_date.type' = 'date',
  'projection.run_date.format' = 'yyyy-MM-dd',
  'projection.run_date.range' = '2026-01-01,NOW',
  'projection.run_date.interval' = '1',
  'projection.run_date.interval.unit' = 'DAYS',
  'projection.group_name.type' = 'injected',
  'storage.location.template' = 's3://factory-quality/musc/scores/run_date=${run_date}/group_name=${group_name}/'
);

-- The same scores for queries across groups: partitions registered by MSCK REPAIR TABLE musc.scores_all
-- after each night (or by a Glue crawler on scores/); Hive decodes the URL-encoded group names.
CREATE EXTERNAL TABLE IF NOT EXISTS musc.scores_all (
  uri string,
  subset_id int,
  subset_size int,
  score_raw double,
  score double,
  rank_in_group int,
  percentile_in_group double,
  is_anomaly boolean,
  flag_policy string,
  map_uri string,
  label tinyint,
  backbone string,
  scores_meaningful boolean,
  config_hash string,
  run_id string,
  scored_at timestamp,
  status string,
  error string,
  match_radius int
)
PARTITIONED BY (run_date date, group_name string)
STORED AS PARQUET
LOCATION 's3://factory-quality/musc/scores/';

-- The engine's metrics per labelled group and run (fractions 0-1).
CREATE EXTERNAL TABLE IF NOT EXISTS musc.metrics (
  group_name string,
  image_auroc double,
  image_ap double,
  image_f1_max double,
  pixel_auroc double,
  pixel_ap double,
  pixel_f1_max double,
  au_pro double,
  mad double,
  run_id string
)
PARTITIONED BY (run_date date)
STORED AS PARQUET
LOCATION 's3://factory-quality/musc/metrics/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.run_date.type' = 'date',
  'projection.run_date.format' = 'yyyy-MM-dd',
  'projection.run_date.range' = '2026-01-01,NOW',
  'projection.run_date.interval' = '1',
  'projection.run_date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://factory-quality/musc/metrics/run_date=${run_date}/'
);
