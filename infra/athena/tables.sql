-- The nightly job's tables for Amazon Athena / the AWS Glue catalog (docs/outputs-and-bi.md).
-- Replace s3://factory-quality/musc with the job's output.prefix, then run each statement once.
-- Stored metrics are fractions 0-1. Column lists match pipeline/job/scores_table.py, manifest.py and
-- nights.py (checked by tests/test_bi.py).

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

-- One run per night and group. The same night scored twice under this prefix (a changed config, a
-- run_id given by hand; the job warns "was already scored with the same inputs by run ...") leaves one
-- part file per run in the night's partitions, and queries over musc.scores_all count those images once
-- per run. This view keeps, for every night and group, the rows of the run that scored the group last
-- (a group's rows are written whole once the group finished, so a failed run's unfinished groups are
-- never picked). Query it like musc.scores_all: SELECT ... FROM musc.scores_latest WHERE run_date = ...
CREATE OR REPLACE VIEW musc.scores_latest AS
SELECT s.*
FROM musc.scores_all s
JOIN (
  SELECT run_date, group_name, max_by(run_id, scored_at) AS run_id
  FROM musc.scores_all
  GROUP BY run_date, group_name
) latest ON s.run_date = latest.run_date AND s.group_name = latest.group_name AND s.run_id = latest.run_id;

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

-- One row per group and night (docs/nights.md): counts by status, flags, score quantiles, the flag line,
-- the shift against the group's previous nights and the alert. One part file per run; a night that ran
-- twice has two: read the latest (max written_at) per night and group, as the job itself does. Only
-- successful runs write one. embedding_mean is what later nights compare with (not for people).
CREATE EXTERNAL TABLE IF NOT EXISTS musc.group_nights (
  group_name string,
  run_id string,
  images int,
  images_ok int,
  images_decode_error int,
  images_group_too_small int,
  images_subset_too_small int,
  images_heatmap_error int,
  scored int,
  flagged int,
  flag_rate double,
  flag_policy string,
  flag_line double,
  score_p05 double,
  score_p50 double,
  score_p95 double,
  score_max double,
  previous_nights int,
  score_shift double,
  score_shift_p double,
  embedding_shift double,
  alert boolean,
  alert_reason string,
  embedding_images int,
  embedding_spread double,
  backbone string,
  config_hash string,
  written_at timestamp,
  embedding_mean array<float>,
  reviewed_run_id string,
  reviewed_run_date string,
  reviewed_flags int,
  confirmed_defects int,
  flag_precision double,
  reviewed_unflagged int,
  missed_defects int
)
PARTITIONED BY (run_date date)
STORED AS PARQUET
LOCATION 's3://factory-quality/musc/group_nights/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.run_date.type' = 'date',
  'projection.run_date.format' = 'yyyy-MM-dd',
  'projection.run_date.range' = '2026-01-01,NOW',
  'projection.run_date.interval' = '1',
  'projection.run_date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://factory-quality/musc/group_nights/run_date=${run_date}/'
);
