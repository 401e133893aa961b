-- Events per country, most first, over [start_date, end_date), optionally of one type
-- and for some countries only.
-- Whole days come from the daily rollup, the whole hours of partial days at the ends from
-- the hourly rollup, and only the partial hours at the very ends from the events table.
{%- set start, end = param('start_date'), param('end_date') %}
{%- set days = whole_buckets("'1 day'", start, end) %}

with events as (
    select country, event_type, events
    from {{ live(ref('rollup_events_daily'), days) }}
    where {{ within('day', days) }}

    {%- for band in [leading_band, trailing_band] %}
    {%- set hours = band("'1 hour'", "'1 day'", start, end) %}

    union all
    select country, event_type, events
    from {{ live(ref('rollup_events_hourly'), hours) }}
    where {{ within('hour', hours) }}
    {%- endfor %}

    {%- for edge in [in_leading_edge, in_trailing_edge] %}

    union all
    select country, event_type, 1::bigint
    from {{ ref('stg_raw__ecommerce_events') }}
    where {{ edge("'1 hour'", start, end) }}
    {%- endfor %}
),

final as (
    select country, sum(events)::bigint as event_count
    from events
    where ({{ param('event_type') }} is null or event_type = {{ param('event_type') }})
      and ({{ param('country') }} is null or country = any({{ param('country') }}))
    group by country
    order by event_count desc, country collate "C"
)

select * from final
