{{ config(grain=['country', 'minute']) }}
-- One row per country and UTC minute holding purchases, with their revenue.
select
    country,
    {{ time_bin("'1 minute'", 'event_time') }} as minute,
    {{ revenue_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, 2
