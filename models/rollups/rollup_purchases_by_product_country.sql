{{ config(grain=['country', 'product_id', 'category']) }}
-- One row per country and product with its all-time purchases.
select
    country,
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, product_id, category
