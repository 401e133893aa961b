{{ config(grain=['minute']) }}
-- One row per UTC minute holding purchases, with their revenue.
select
    {{ time_bin("'1 minute'", 'event_time') }} as minute,
    {{ revenue_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by 1
