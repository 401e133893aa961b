-- The events with their personal columns pseudonymised: what analysts read in place of
-- user_id and session_id (macros/analysts.sql). The same id always gives the same key,
-- so analysts can still count distinct users or follow a session.
with events as (
    select * from {{ ref('stg_raw__ecommerce_events') }}
),

final as (
    select
        event_time,
        event_type,
        {{ pseudonym('user_id') }} as user_key,
        product_id,
        category,
        price,
        quantity,
        {{ pseudonym('session_id') }} as session_key,
        country,
        revenue
    from events
)

select * from final
