"""Recognizing derivable endpoints from their compiled SQL (project/derivation.py) and
planning the rollups that serve them (project/rollup_plans.py): every form of the class,
every construct that puts an endpoint outside it (with the line the build prints), and
rollups shared between endpoints of the same grain."""

from __future__ import annotations

import pytest

from cartpulse.project.derivation import Refused, StagingModel, recognize
from cartpulse.project.params import Param
from cartpulse.project.rollup_plans import plan, widths

STAGING = StagingModel("stg_raw__ecommerce_events", "ecommerce_events", "event_time",
                       ("event_time", "event_type", "user_id", "product_id", "category", "price", "quantity",
                        "session_id", "country", "revenue"), pending="stg_raw__ecommerce_events_pending")
FROM = '"cartpulse"."analytics"."stg_raw__ecommerce_events"'
#: The README's example endpoint ("Adding an endpoint"), as dbt compiles it.
README_EXAMPLE = f"""-- models/marts/events_by_type.sql
select event_type, count(*)::bigint as event_count
from {FROM}
where $1 is null or country = $1
group by event_type
"""
PARAMS = {"country": {"type": "String"}, "countries": {"type": "Array(String)"}, "start_date": {"type": "DateTime"},
          "end_date": {"type": "DateTime"}, "interval": {"type": "String", "enum": ["1 minute", "15 minutes", "1 hour"]},
          "limit": {"type": "Int", "default": 10}, "width": {"type": "String"}, "min_price": {"type": "Float"}}


def params(*names: str) -> dict:
    return {name: Param.declared(name, PARAMS[name]) for name in names}


OTHER = StagingModel("stg_web__page_views", "page_views", "viewed_at", ("viewed_at", "page"))


def derive(sql: str, *names: str):
    return recognize(sql, params(*names), {STAGING.name: STAGING, OTHER.name: OTHER})


def test_the_readmes_example_is_derivable_from_one_all_time_rollup():
    d = derive(README_EXAMPLE, "country")
    assert d.group_by == ("event_type",) and d.bucket is None and not d.has_range
    assert [(f.column, f.param, f.form, f.optional) for f in d.param_filters] == [("country", "country", "=", True)]
    assert [m.label for m in d.measures] == ["events"] and d.fixed_filter is None
    assert d.dimensions == ("event_type", "country")
    served, rollups = plan({"events_by_type": d})
    # One rollup for requests without a country (one row per type), one with countries.
    assert served == {"events_by_type": ("derived_ecommerce_events__event_type__all",
                                         "derived_ecommerce_events__country_event_type__all")}
    assert [(r.dimensions, r.width) for r in rollups.values()] == [(("event_type",), None),
                                                                  (("country", "event_type"), None)]


def test_the_seed_shapes_with_ranges_buckets_arrays_and_fixed_filters():
    top = derive(f"""select product_id, sum(quantity)::bigint as total_quantity,
                        sum(price * quantity)::double precision as total_revenue
                 from {FROM}
                 where event_type = 'purchase'
                   and ($1 is null or event_time >= $1) and ($2 is null or event_time < $2)
                   and ($3 is null or country = any($3))
                 group by product_id
                 order by total_revenue desc, product_id collate "C"
                 limit $4""", "start_date", "end_date", "countries", "limit")
    assert top.range_params == ("start_date", "end_date") and top.range_optional == (True, True)
    assert top.fixed_filter == "(event_type = 'purchase')"
    assert [m.label for m in top.measures] == ["events", "count(quantity)", "sum(quantity)",
                                                "count(price * quantity)", "sum(price * quantity)"]
    assert top.post == ("ORDER BY", "LIMIT")
    # A range that may be left out: all time, then days and hours (the edges).
    assert widths(top) == (None, 86400, 3600)

    revenue = derive(f"""select date_bin($3::interval, event_time, timestamptz '2000-01-01 00:00:00+00') as time_bin,
                            sum(revenue) as total_revenue
                     from {FROM}
                     where event_time >= $1 and event_time < $2 and event_type = 'purchase'
                     group by 1 order by 1""", "start_date", "end_date", "interval")
    assert revenue.bucket.widths == ("1 minute", "15 minutes", "1 hour") and revenue.bucket.param == "interval"
    assert revenue.group_by == () and revenue.range_optional == (False, False)
    # Each width's own rollup; a required range needs no all-time rollup; no minute below a minute.
    assert widths(revenue) == (3600, 900, 60)

    buckets = derive(f"""select time_bucket('15 minutes'::interval, event_time) as bin, country, avg(price), min(price),
                            max(quantity), count(user_id)
                     from {FROM} group by bin, country having count(*) > 1""")
    assert buckets.bucket.widths == ("15 minutes",) and buckets.bucket.origin is None
    assert buckets.group_by == ("country",) and buckets.extrema == ("price", "quantity")
    assert buckets.dimensions == ("country", "price", "quantity")
    assert [m.label for m in buckets.measures] == ["events", "count(price)", "sum(price)", "count(user_id)"]
    assert widths(buckets) == (900,)


@pytest.mark.parametrize("where, kind", [
    ("event_time >= $1", ("start_date", False)),
    ("$1 is null or event_time >= $1", ("start_date", True)),
    ("(event_time >= $1 or $1 is null)", ("start_date", True)),
    ("$1 <= event_time", ("start_date", False)),
])
def test_range_bounds_in_every_form_the_readme_shows(where, kind):
    d = derive(f"select country, count(*) from {FROM} where {where} group by country", "start_date")
    assert (d.range_params[0], d.range_optional[0]) == kind


def test_parameters_elsewhere_than_where_are_post_aggregation():
    d = derive(f"select country, count(*) as n from {FROM} group by country having count(*) >= $1 "
               f"order by n desc limit $2 offset 1", "min_price", "limit")
    assert d.post == ("HAVING", "ORDER BY", "LIMIT", "OFFSET")


@pytest.mark.parametrize("sql, names, says", [
    (f"select * from {FROM}", (), "no GROUP BY and no aggregate"),
    (f"select country, count(distinct user_id) from {FROM} group by 1", (), "count(DISTINCT user_id) (DISTINCT inside an aggregate)"),
    (f"select country, count(*) from {FROM} where price > $1 group by 1", ("min_price",),
     "WHERE price > $1 (a parameter bounds only event_time"),
    (f"with x as (select country, price * 2 as price from {FROM}) select country, sum(price) from x group by 1", (),
     "the WITH query x: the computed column price * 2 AS price"),
    (f"with x as (select country, count(*) as n from {FROM} group by 1) select country, sum(n) from x group by 1", (),
     "the WITH query x: GROUP BY"),
    (f"with x as (select * from {FROM} where country = $1) select country, count(*) from x group by 1", ("country",),
     "the WITH query x: a parameter in its WHERE"),
    (f"with x as (select country from {FROM}) select country, sum(price) from x group by 1", (),
     "the column price, which stg_raw__ecommerce_events does not have"),
    (f"with recursive x as (select * from {FROM}) select country, count(*) from x group by 1", (), "WITH RECURSIVE"),
    (f"select country, count(*) from {FROM} where event_time >= cast($1 as date) group by 1", ("start_date",),
     "WHERE event_time >= CAST($1 AS DATE) (a parameter is used as"),
    (f"select a.country, count(*) from {FROM} a join other b on true group by 1", (), "a JOIN"),
    (f"select country, count(*) from {FROM} where event_time > now() - interval '1 day' group by 1", (),
     "now(), whose value changes from one call to the next"),
    (f"select country, string_agg(user_id, ',') from {FROM} group by 1", (), "the aggregate string_agg(user_id, ',')"),
    (f"select country, count(*) over () from {FROM} group by 1", (), "a window function (OVER)"),
    ("select product_id, sum(quantity) from analytics.rollup_purchases_daily_live group by 1", (),
     "FROM rollup_purchases_daily_live, which is not a data source's staging model"),
    (f"select country, sum(price) from (select * from {FROM}) s group by 1", (), "FROM SUBQUERY"),
    (f"select country, sum(case when country = $1 then price end) from {FROM} group by 1", ("country",),
     "(a parameter inside an aggregate)"),
    (f"select country, count(*) from {FROM} group by country, extract(hour from event_time)", (),
     "GROUP BY EXTRACT(HOUR FROM event_time) (only columns and a time bucket of event_time)"),
    (f"select date_bin($1::interval, event_time, timestamptz '2000-01-01') b, count(*) from {FROM} group by 1",
     ("width",), "the parameter width without an enum of widths"),
    (f"select date_bin('1 month', event_time, timestamptz '2000-01-01') b, count(*) from {FROM} group by 1", (),
     "a time bucket of width '1 month'"),
    (f"select date_bin('7 days', event_time, timestamptz '2000-01-01') b, count(*) from {FROM} group by 1", (),
     "(only widths that divide a day"),
    (f"select date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:07:00+00') b, count(*) from {FROM} "
     "group by 1", (), "whose origin is not on a '15 minutes' boundary"),
    (f"select date_bin('1 hour', event_time, timestamptz '2000-01-01 00:00:00+02') b, count(*) from {FROM} group by 1",
     (), "is not a UTC timestamp literal"),
    (f"select country, count(*) from {FROM} where country = $1 group by 1", ("countries",),
     "(an Array parameter compared with =)"),
    (f"select country, count(*) from {FROM} where country = any($1) group by 1", ("country",),
     "(= any() of a parameter that is not an Array)"),
    (f"select country, count(*) from {FROM} where $2 is null or country = $1 group by 1", ("country", "start_date"),
     "(the IS NULL test names another parameter)"),
    (f"select country, price, count(*) from {FROM} group by 1", (), "SELECT price, neither grouped nor aggregated"),
    (f"select country, min(price * quantity) from {FROM} group by 1", (), "min and max are derived over a column"),
    (f"select nope, count(*) from {FROM} group by 1", (), "the column nope, which stg_raw__ecommerce_events does not have"),
    (f"select country, count(*) from {FROM} where event_time >= $1 and event_time >= $1 group by 1", ("start_date",),
     "two start bounds on event_time"),
    (f"select country, count(*) from {FROM} group by 1 union all select 'x', 1", (), "a UNION statement"),
    ("select page, count(*) from stg_web__page_views group by 1", (),
     "FROM stg_web__page_views, which has no pending twin stg_web__page_views_pending"),
])
def test_each_construct_outside_the_class_is_named(sql, names, says):
    with pytest.raises(Refused) as refusal:
        derive(sql, *names)
    assert says in str(refusal.value)


def test_endpoints_of_one_grain_share_a_rollup_with_the_union_of_their_measures():
    by_type = derive(README_EXAMPLE, "country")
    revenue = derive(f"select event_type, sum(price) as s from {FROM} where country = $1 group by 1", "country")
    other = derive(f"select event_type, count(*) from {FROM} where event_type <> 'view' group by 1")
    served, rollups = plan({"events_by_type": by_type, "revenue_by_type": revenue, "not_views": other})
    # revenue_by_type always filters by country (a required parameter): the README's
    # endpoint's rollup with countries, which both share.
    shared = rollups[served["revenue_by_type"][0]]
    assert served["revenue_by_type"] == served["events_by_type"][1:] and shared.dimensions == ("country", "event_type")
    assert [m.label for m in shared.measures] == ["events", "count(price)", "sum(price)"]
    assert [m.label for m in rollups[served["events_by_type"][0]].measures] == ["events"]
    # A fixed filter is another rollup (its rows are a subset), and so are other dimensions.
    assert not set(served["not_views"]) & set(served["events_by_type"]) and len(rollups) == 3
    assert rollups[served["not_views"][0]].fixed_filter == "(event_type <> 'view')"


def test_the_catalog_recognizes_from_the_compiled_file_and_metadata_shows_it(tmp_path):
    """The manifest keeps a node's compiled code only in the run that compiled it; dbt's
    compiled file stays, and is what the endpoint's function was built from."""
    from cartpulse.project.endpoints import endpoints_from_manifest
    from cartpulse.serving.pipe_metadata import derivation

    source = {"name": "ecommerce_events", "columns": {c: {} for c in STAGING.columns},
              "config": {"meta": {"datasource": {"partition_key": "event_time"}}}}
    staging = {"resource_type": "model", "name": STAGING.name, "schema": "analytics", "columns": {},
               "depends_on": {"nodes": ["source.cartpulse.raw.ecommerce_events"]}}
    endpoint = {"resource_type": "model", "name": "events_by_type", "schema": "analytics", "package_name": "cartpulse",
                "original_file_path": "models/marts/events_by_type.sql",
                "config": {"meta": {"endpoint": {"params": {"country": {"type": "String"}}}}},
                "depends_on": {"nodes": [f"model.cartpulse.{STAGING.name}"]}}
    pending = {"resource_type": "model", "name": STAGING.pending, "schema": "analytics", "columns": {},
               "depends_on": {"nodes": []}}
    manifest = {"sources": {"source.cartpulse.raw.ecommerce_events": source},
                "nodes": {"model.cartpulse.stg": staging, "model.cartpulse.pending": pending,
                          "model.cartpulse.events_by_type": endpoint}}
    assert derivation(endpoints_from_manifest(manifest, tmp_path)["events_by_type"]) == {
        "derivable": False, "reason": "not compiled yet (run `cartpulse build`)", "rollups": [], "answered_from": "sql"}
    compiled = tmp_path / "compiled" / "cartpulse" / "models" / "marts" / "events_by_type.sql"
    compiled.parent.mkdir(parents=True)
    compiled.write_text(README_EXAMPLE)
    said = derivation(endpoints_from_manifest(manifest, tmp_path)["events_by_type"])
    assert said["derivable"] is True and said["reason"] is None
    assert said["rollups"][1] == {"name": "derived_ecommerce_events__country_event_type__all",
                                  "data_source": "ecommerce_events", "dimensions": ["country", "event_type"],
                                  "time_grain": "all", "filter": None, "measures": ["events"]}


#: The seed's top_products pipe as `cartpulse tinybird import` translates it: its
#: intermediate node a WITH query, each parameter cast to its own type.
IMPORTED_TOP_PRODUCTS = f"""WITH purchases AS (SELECT event_time, product_id, category, country, price, quantity
FROM {FROM} AS ecommerce_events WHERE event_type = 'purchase')
SELECT CAST(product_id AS TEXT) AS product_id, CAST(SUM(quantity) AS BIGINT) AS total_quantity,
CAST(SUM(price * quantity) AS DOUBLE PRECISION) AS total_revenue FROM purchases WHERE 1 = 1
AND ((CAST($1 AS timestamptz) IS NULL) OR (event_time >= CAST($1 AS timestamptz)))
AND ((CAST($2 AS timestamptz) IS NULL) OR (event_time < CAST($2 AS timestamptz)))
AND (((CAST($3 AS text[])) IS NULL) OR (country = ANY(CAST($3 AS text[]))))
GROUP BY product_id ORDER BY total_revenue DESC NULLS LAST, product_id LIMIT CAST($4 AS bigint)"""


def test_a_with_query_that_filters_columns_is_read_through_and_casts_to_a_parameters_type_are_no_change():
    d = derive(IMPORTED_TOP_PRODUCTS, "start_date", "end_date", "countries", "limit")
    assert d.staging == STAGING and d.group_by == ("product_id",)
    assert d.range_params == ("start_date", "end_date") and d.range_optional == (True, True)
    assert [(f.column, f.param, f.form, f.optional) for f in d.param_filters] == [("country", "countries", "any", True)]
    # The WITH query's filter is the rollups' fixed filter, with the endpoint's own (1 = 1).
    assert d.fixed_filter == "(event_type = 'purchase') and (1 = 1)"
    assert d.post == ("ORDER BY", "LIMIT")


def test_files_generated_in_an_older_form_are_removed_before_deriving(tmp_path):
    """dbt parses every model, so a generated rollup calling a macro the way an older
    CartPulse did (``rollup_input()`` without its staging model) would stop the compile
    that derives its replacement; a user's own file in the folder is left alone."""
    from cartpulse.ops.derive import _forget_other_forms
    from cartpulse.project.derived_models import HEADER, MARK

    old = tmp_path / "derived_ecommerce_events__total__all.sql"
    old.write_text(f"-- {MARK} (docs/realtime.md, \"Derived endpoints\"): do not edit.\nselect 1 from {{{{ rollup_input() }}}}\n")
    current = tmp_path / "derived_ecommerce_events__country__all.sql"
    current.write_text(f"{HEADER}\nselect 1\n")
    mine = tmp_path / "notes.sql"
    mine.write_text("-- mine\nselect 1\n")
    _forget_other_forms(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sql"]
    current.write_text(f"{HEADER}\nselect 1\n")
    _forget_other_forms(tmp_path)
    assert current.exists()


@pytest.mark.parametrize("unit, width", [("hour", "1 hour"), ("DAY", "1 day"), ("minute", "1 minute")])
def test_date_trunc_to_a_fixed_unit_is_a_time_bucket(unit, width):
    d = derive(f"select date_trunc('{unit}', event_time) as t, count(*) from {FROM} group by 1")
    assert d.bucket is not None and d.bucket.widths == (width,) and d.bucket.param is None


def test_date_trunc_to_a_month_is_not_a_fixed_width():
    with pytest.raises(Refused) as refusal:
        derive(f"select date_trunc('month', event_time) as t, count(*) from {FROM} group by 1")
    assert "date_trunc derives by second, minute, hour or day" in str(refusal.value)
