-- Events per country, most first, over [start_date, end_date), optionally of one type
-- and for some countries only. Plain SQL over the events, answered from the rollups
-- CartPulse derives from it (docs/realtime.md, "Derived endpoints").
select
    country,
    count(*)::bigint as event_count
from {{ ref('stg_raw__ecommerce_events') }}
where ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
  and ({{ param('event_type') }} is null or event_type = {{ param('event_type') }})
  and ({{ param('country') }} is null or country = any({{ param('country') }}))
group by country
order by event_count desc, country collate "C"
