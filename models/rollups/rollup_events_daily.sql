{{ config(grain=['day', 'country', 'event_type']) }}
-- One row per UTC day, country and event type with its number of events.
select
    {{ time_bin("'1 day'", 'event_time') }} as day,
    country,
    event_type,
    {{ events_measure() }}
from {{ rollup_input() }}
group by 1, country, event_type
