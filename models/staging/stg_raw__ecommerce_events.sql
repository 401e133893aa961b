-- Rename and cast only: the one place the marts read events from.
{{ stage_events(source('raw', 'ecommerce_events')) }}
