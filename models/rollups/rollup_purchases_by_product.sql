{{ config(grain=['product_id', 'category']) }}
-- One row per product (and category) with its all-time purchases.
select
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by product_id, category
