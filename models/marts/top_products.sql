-- Products by purchase revenue, best first, over [start_date, end_date), optionally for
-- one category and some countries (an Array(String)). Written as plain SQL over the
-- events: CartPulse derives the rollups that answer it and keeps them exact
-- (docs/realtime.md, "Derived endpoints").
select
    product_id,
    sum(quantity)::bigint as total_quantity,
    sum(revenue) as total_revenue
from {{ ref('stg_raw__ecommerce_events') }}
where event_type = 'purchase'
  and ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
  and ({{ param('category') }} is null or category = {{ param('category') }})
  and ({{ param('country') }} is null or country = any({{ param('country') }}))
group by product_id
order by total_revenue desc, product_id collate "C"
limit {{ param('limit') }}
