{{ config(grain=['day', 'product_id', 'category']) }}
-- One row per UTC day and product with that day's purchases.
select
    {{ time_bin("'1 day'", 'event_time') }} as day,
    product_id,
    category,
    sum(sign * quantity)::bigint as quantity,
    sum(sign * revenue::numeric) as revenue,
    sum(sign)::bigint as events
from {{ rollup_input() }}
where event_type = 'purchase'
group by 1, product_id, category
