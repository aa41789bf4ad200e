-- 0003: vacuum the jobs table early and at full speed.
-- Every job leaves two dead row versions (claim, outcome) and, after retention, a deleted
-- row. Space is reused only after a vacuum, so the table grows by everything written between
-- two vacuums. The server's defaults wait until a fifth of the table is dead and throttle the
-- vacuum (cost delay), which on a busy queue means hundreds of megabytes between passes.
-- Here a vacuum starts once 1% (at least 1,000 rows) is dead, and is not throttled: the
-- table holds the queue plus the retention window, so a pass is short.
ALTER TABLE {jobs} SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
