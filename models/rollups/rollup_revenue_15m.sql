{{ config(grain=['bin']) }}
-- One row per UTC 15-minute bucket holding purchases, with their revenue: the default
-- and every coarser `interval` of total_revenue read these (a quarter of the minutes).
select
    {{ time_bin("'15 minutes'", 'event_time') }} as bin,
    {{ revenue_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by 1
