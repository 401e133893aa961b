{{ config(grain=['country', 'bin']) }}
-- One row per country and UTC 15-minute bucket holding purchases, with their revenue.
select
    country,
    {{ time_bin("'15 minutes'", 'event_time') }} as bin,
    {{ revenue_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, 2
