-- Purchase revenue per `interval` bucket of event_time (UTC), in time order, over
-- [start_date, end_date), optionally for some countries. Plain SQL over the events,
-- answered from the rollups CartPulse derives from it, one set per declared interval
-- (docs/realtime.md, "Derived endpoints").
select
    {{ time_bin(param('interval'), 'event_time') }} as time_bin,
    sum(revenue) as total_revenue
from {{ ref('stg_raw__ecommerce_events') }}
where event_type = 'purchase'
  and ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
  and ({{ param('country') }} is null or country = any({{ param('country') }}))
group by 1
order by 1
