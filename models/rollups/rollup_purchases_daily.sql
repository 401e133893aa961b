{{ config(grain=['day', 'product_id', 'category']) }}
-- One row per UTC day and product with that day's purchases.
select
    {{ time_bin("'1 day'", 'event_time') }} as day,
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by 1, product_id, category
