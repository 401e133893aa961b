-- Purchase revenue per 15-minute bucket of event_time (UTC).
with events as (
    select * from {{ ref('stg_raw__ecommerce_events') }}
),

purchases as (
    select event_time, revenue
    from events
    where event_type = 'purchase'
),

final as (
    select
        {{ time_bin("'15 minutes'", 'event_time') }} as time_bin,
        sum(revenue)::double precision as total_revenue
    from purchases
    group by 1
    order by 1
)

select * from final
