{{ config(grain=['country', 'product_id', 'category']) }}
-- One row per country and product with its all-time purchases.
select
    country,
    product_id,
    category,
    sum(sign * quantity)::bigint as quantity,
    sum(sign * revenue::numeric) as revenue,
    sum(sign)::bigint as events
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, product_id, category
