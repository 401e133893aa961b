-- An Array(String) parameter filters on each of its elements, not on one of them:
-- events_by_country for its two busiest countries is exactly those two rows of its
-- unfiltered answer. Returns the rows that differ (none when it holds; none on no data).
{%- set pipe = ref('events_by_country') %}

with unfiltered as (
    select country, event_count from {{ pipe }}
),

picked as (
    select array_agg(country order by event_count desc, country collate "C") as countries
    from (
        select country, event_count
        from unfiltered
        order by event_count desc, country collate "C"
        limit 2
    ) as busiest
),

filtered as (
    select answer.country, answer.event_count
    from picked
    cross join lateral {{ pipe }}(country => picked.countries) as answer
    where picked.countries is not null
),

wanted as (
    select unfiltered.country, unfiltered.event_count
    from unfiltered
    cross join picked
    where unfiltered.country = any(picked.countries)
),

final as (
    (select * from filtered except all select * from wanted)
    union all
    (select * from wanted except all select * from filtered)
)

select * from final
