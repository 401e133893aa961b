{{ config(grain=['hour', 'country', 'event_type']) }}
-- One row per UTC hour, country and event type with its number of events: the whole
-- hours at the ends of a range that does not start or end on a UTC midnight.
select
    {{ time_bin("'1 hour'", 'event_time') }} as hour,
    country,
    event_type,
    {{ events_measure() }}
from {{ rollup_input() }}
group by 1, country, event_type
