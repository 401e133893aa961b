{{ config(grain=['hour', 'product_id', 'category']) }}
-- One row per UTC hour and product with that hour's purchases: the whole hours at the
-- ends of a range that does not start or end on a UTC midnight.
select
    {{ time_bin("'1 hour'", 'event_time') }} as hour,
    product_id,
    category,
    {{ purchase_measures() }}
from {{ rollup_input() }}
where event_type = 'purchase'
group by 1, product_id, category
