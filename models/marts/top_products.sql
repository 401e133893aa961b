-- Products by purchase revenue, best first, over [start_date, end_date), optionally for
-- one category and some countries (an Array(String)). No range: all-time rollups. A range: daily rollups for
-- its whole days, hourly rollups for the whole hours of the partial days at its ends, and
-- the events table only for the partial hours at its very ends (macros/ranges.sql).
{%- set start, end, country = param('start_date'), param('end_date'), param('country') %}
{%- set no_range = '(' ~ start ~ ' is null and ' ~ end ~ ' is null)' %}
{%- set days = whole_buckets("'1 day'", start, end) %}

with purchases as (
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_by_product')) }}
    where {{ no_range }} and {{ country }} is null

    union all
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_by_product_country')) }}
    where {{ no_range }} and {{ country }} is not null and country = any({{ country }})

    union all
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_daily'), days) }}
    where not {{ no_range }} and {{ country }} is null
      and {{ within('day', days) }}

    union all
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_daily_by_country'), days) }}
    where not {{ no_range }} and {{ country }} is not null and country = any({{ country }})
      and {{ within('day', days) }}

    {%- for band in [leading_band, trailing_band] %}
    {%- set hours = band("'1 hour'", "'1 day'", start, end) %}

    union all
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_hourly'), hours) }}
    where not {{ no_range }} and {{ country }} is null
      and {{ within('hour', hours) }}

    union all
    select product_id, category, quantity, revenue
    from {{ live(ref('rollup_purchases_hourly_by_country'), hours) }}
    where not {{ no_range }} and {{ country }} is not null and country = any({{ country }})
      and {{ within('hour', hours) }}
    {%- endfor %}

    {%- for edge in [in_leading_edge, in_trailing_edge] %}

    union all
    select product_id, category, quantity, revenue::numeric
    from {{ ref('stg_raw__ecommerce_events') }}
    where event_type = 'purchase' and ({{ country }} is null or country = any({{ country }}))
      and {{ edge("'1 hour'", start, end) }}
    {%- endfor %}
),

per_product as (
    select
        product_id,
        sum(quantity)::bigint as total_quantity,
        sum(revenue) as total_revenue
    from purchases
    where {{ param('category') }} is null or category = {{ param('category') }}
    group by product_id
),

best as (
    select product_id, total_quantity, total_revenue
    from per_product
    order by total_revenue desc, product_id collate "C"
    limit {{ param('limit') }}
),

{#- Converted to a double after the limit: numeric to double is not cheap, and before the
    sort it would run once per product instead of once per row answered. #}
final as (
    select product_id, total_quantity, total_revenue::double precision as total_revenue
    from best
    order by best.total_revenue desc, product_id collate "C"
)

select * from final
