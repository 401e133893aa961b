-- Rename and cast only: the one place the marts read events from.
with source as (
    select * from {{ source('raw', 'ecommerce_events') }}
),

final as (
    select
        event_time,
        event_type,
        user_id,
        product_id,
        category,
        price,
        quantity,
        session_id,
        country,
        price * quantity as revenue
    from source
)

select * from final
