{{ config(materialized='endpoint') }}
-- Purchase revenue per `interval` bucket of event_time (UTC), in time order, over
-- [start_date, end_date), optionally for one country. Whole minutes come from the
-- minutely rollups, partial minutes at the ends from the events table.
{%- set start, end, country = param('start_date'), param('end_date'), param('country') %}

with minutes as (
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely')) }}
    where {{ country }} is null and {{ in_whole_buckets('minute', "'1 minute'", start, end) }}

    union all
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely_by_country')) }}
    where country = {{ country }} and {{ in_whole_buckets('minute', "'1 minute'", start, end) }}

    union all
    select {{ time_bin("'1 minute'", 'event_time') }}, revenue::numeric
    from {{ ref('stg_raw__ecommerce_events') }}
    where event_type = 'purchase' and ({{ country }} is null or country = {{ country }})
      and {{ in_leading_edge("'1 minute'", start, end) }}

    union all
    select {{ time_bin("'1 minute'", 'event_time') }}, revenue::numeric
    from {{ ref('stg_raw__ecommerce_events') }}
    where event_type = 'purchase' and ({{ country }} is null or country = {{ country }})
      and {{ in_trailing_edge("'1 minute'", start, end) }}
),

final as (
    select
        {{ time_bin(param('interval'), 'minute') }} as time_bin,
        sum(revenue)::double precision as total_revenue
    from minutes
    group by 1
    order by 1
)

select * from final
