{{ config(grain=['country', 'day', 'product_id', 'category']) }}
-- One row per country, UTC day and product with those purchases.
select
    country,
    {{ time_bin("'1 day'", 'event_time') }} as day,
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input('stg_raw__ecommerce_events') }}
where event_type = 'purchase'
group by country, 2, product_id, category
