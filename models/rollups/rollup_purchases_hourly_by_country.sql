{{ config(grain=['country', 'hour', 'product_id', 'category']) }}
-- One row per country, UTC hour and product with those purchases.
select
    country,
    {{ time_bin("'1 hour'", 'event_time') }} as hour,
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by country, 2, product_id, category
