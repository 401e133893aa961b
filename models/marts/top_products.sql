-- The ten products with the most purchase revenue.
with events as (
    select * from {{ ref('stg_raw__ecommerce_events') }}
),

purchases as (
    select product_id, quantity, revenue
    from events
    where event_type = 'purchase'
),

per_product as (
    select
        product_id,
        sum(quantity)::bigint as total_quantity,
        sum(revenue)::double precision as total_revenue
    from purchases
    group by product_id
),

final as (
    select product_id, total_quantity, total_revenue
    from per_product
    order by total_revenue desc, product_id collate "C"
    limit 10
)

select * from final
