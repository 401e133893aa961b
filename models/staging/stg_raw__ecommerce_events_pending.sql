-- The same columns as stg_raw__ecommerce_events, over the events not yet absorbed by
-- every rollup, with the id of the transaction that wrote each one.
{{ stage_events(source('raw', 'ecommerce_events_pending'), extra=['ingest_xid']) }}
