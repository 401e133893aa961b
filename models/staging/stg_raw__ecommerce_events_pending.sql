-- The same columns as stg_raw__ecommerce_events, over the events not yet absorbed by
-- every rollup, with the id of the transaction that wrote each one and its sign (-1: the
-- retraction of a deleted event, docs/realtime.md).
{{ stage_events(source('raw', 'ecommerce_events_pending'), extra=['ingest_xid', 'sign']) }}
