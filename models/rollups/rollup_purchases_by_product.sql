{{ config(grain=['product_id', 'category']) }}
-- One row per product (and category) with its all-time purchases.
select
    product_id,
    category,
    sum(sign * quantity)::bigint as quantity,
    sum(sign * revenue::numeric) as revenue,
    sum(sign)::bigint as events
from {{ rollup_input() }}
where event_type = 'purchase'
group by product_id, category
