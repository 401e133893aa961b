-- The same columns as stg_raw__ecommerce_events, over the events not yet absorbed by
-- every rollup, with the id of the transaction that wrote each one.
with source as (
    select * from {{ source('raw', 'ecommerce_events_pending') }}
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
        price * quantity as revenue,
        ingest_xid
    from source
)

select * from final
