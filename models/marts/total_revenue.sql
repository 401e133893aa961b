-- Purchase revenue per `interval` bucket of event_time (UTC), in time order, over
-- [start_date, end_date), optionally for some countries. Every interval but 1 minute is
-- a whole number of quarter-hours, so whole quarter-hours come from the 15-minute
-- rollups and the whole minutes of the partial quarter-hours at the ends of the range
-- from the minutely ones; for 1 minute, every whole minute comes from the minutely
-- rollups. Only the partial minutes at the very ends come from the events table.
{%- set start, end, country = param('start_date'), param('end_date'), param('country') %}
{%- set by_minute = '(' ~ param('interval') ~ " = '1 minute')" %}
{%- set quarters, minutes = whole_buckets("'15 minutes'", start, end), whole_buckets("'1 minute'", start, end) %}
{#- The declared intervals as interval constants: a text-to-interval cast is not folded
    by the planner and would be parsed again for every row. -#}
{%- set width %}(case {{ param('interval') }} when '1 minute' then interval '1 minute'
    when '15 minutes' then interval '15 minutes' when '1 hour' then interval '1 hour'
    when '1 day' then interval '1 day' else {{ param('interval') }}::interval end){% endset %}

with revenue as (
    select bin, revenue
    from {{ live(ref('rollup_revenue_15m'), quarters) }}
    where not {{ by_minute }} and {{ country }} is null
      and {{ within('bin', quarters) }}

    union all
    select bin, revenue
    from {{ live(ref('rollup_revenue_15m_by_country'), quarters) }}
    where not {{ by_minute }} and {{ country }} is not null and country = any({{ country }})
      and {{ within('bin', quarters) }}

    union all
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely'), minutes) }}
    where {{ by_minute }} and {{ country }} is null
      and {{ within('minute', minutes) }}

    union all
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely_by_country'), minutes) }}
    where {{ by_minute }} and {{ country }} is not null and country = any({{ country }})
      and {{ within('minute', minutes) }}

    {%- for band in [leading_band, trailing_band] %}
    {%- set band_minutes = band("'1 minute'", "'15 minutes'", start, end) %}

    union all
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely'), band_minutes) }}
    where not {{ by_minute }} and {{ country }} is null
      and {{ within('minute', band_minutes) }}

    union all
    select minute, revenue
    from {{ live(ref('rollup_revenue_minutely_by_country'), band_minutes) }}
    where not {{ by_minute }} and {{ country }} is not null and country = any({{ country }})
      and {{ within('minute', band_minutes) }}
    {%- endfor %}

    {%- for edge in [in_leading_edge, in_trailing_edge] %}

    union all
    select event_time, revenue::numeric
    from {{ ref('stg_raw__ecommerce_events') }}
    where event_type = 'purchase' and ({{ country }} is null or country = any({{ country }}))
      and {{ edge("'1 minute'", start, end) }}
    {%- endfor %}
),

final as (
    select
        {{ time_bin(width, 'bin') }} as time_bin,
        sum(revenue)::double precision as total_revenue
    from revenue
    group by 1
    order by 1
)

select * from final
