{{ config(grain=['country', 'hour', 'product_id', 'category']) }}
-- One row per country, UTC hour and product with those purchases.
select
    country,
    {{ time_bin("'1 hour'", 'event_time') }} as hour,
    product_id,
    category,
    sum(sign * quantity)::bigint as quantity,
    sum(sign * revenue::numeric) as revenue,
    sum(sign)::bigint as events
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, 2, product_id, category
