-- How many events of any type came from each country.
with events as (
    select * from {{ ref('stg_raw__ecommerce_events') }}
),

final as (
    select
        country,
        count(*)::bigint as event_count
    from events
    group by country
    order by event_count desc, country collate "C"
)

select * from final
