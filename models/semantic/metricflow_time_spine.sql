-- One row per UTC hour from 2000 to 2100: the calendar MetricFlow joins to (metrics over
-- hours without events, cumulative metrics). A view: the hours are generated only when
-- a query joins it.
select hour as date_hour
from generate_series(timestamp '2000-01-01', timestamp '2100-12-31 23:00', interval '1 hour') as hours (hour)
