"""Two public Tinybird projects (their datafiles, tests/fixtures/tinybird/<name>/README.md
says where from) imported into one copy of the project, built and served: what imports
answers as an independent Python computation over generated rows, and what does not is
refused in one line each, the lines docs/tinybird-api.md lists."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cartpulse.cli import tinybird_import
from cartpulse.project.tinybird_datafiles import read, schema
from support import built_copy, copy_project, ndjson

FIXTURES = Path(__file__).parent / "fixtures" / "tinybird"
LOGS, FLAPPY = FIXTURES / "log_analytics", FIXTURES / "flappy"
START = datetime(2025, 1, 6, tzinfo=UTC)
#: When the flappy events were made: set as they are sent (imported, below), since
#: api_personalization reads the 5 minutes before the server's now().
NOW = datetime.now(UTC).replace(microsecond=0)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def logs(n: int = 500) -> list[dict]:
    """Rows of log_analytics' logs data source: every String column given, over 3 days."""
    rng = random.Random(251)
    columns = {c.name: c.type for c in schema(read(LOGS / "datasources" / "logs.datasource"))}
    rows = []
    for i in range(n):
        row = {name: f"{name}-{rng.randrange(3)}" for name, kind in columns.items() if kind == "String"}
        row.update(event_ts=_ts(START + timedelta(seconds=rng.randrange(3 * 86400), milliseconds=rng.randrange(1000))),
                   isbot=rng.randrange(2), log_level=rng.choice(["INFO", "INFO", "WARN", "ERROR"]),
                   url=f"https://shop.example/api/f{rng.randrange(4)}?id={i}")
        rows.append(row)
    return rows


def flappy_events() -> list[dict]:
    """events_api rows: players' sessions of score/purchase/game_over events; each session
    either ended under a minute before NOW or hours before it (api_personalization reads
    the last 5 minutes: none lies near that edge, and the test reads within minutes)."""
    rng = random.Random(252)
    rows = []
    for session in range(40):
        player = f"player{session % 4}"
        end = NOW - (timedelta(seconds=10 + session) if session % 3 == 0 else timedelta(hours=2, seconds=session * 37))
        for k in range(rng.randrange(1, 15)):
            kind = rng.choice(["score", "score", "score", "purchase"])
            rows.append({"name": player, "session_id": f"s{session:02d}", "type": kind,
                         "timestamp": _ts(end - timedelta(seconds=k * 3 + 1, milliseconds=rng.randrange(1000)))})
        rows.append({"name": player, "session_id": f"s{session:02d}", "type": "game_over", "timestamp": _ts(end)})
    return rows


LOGS_ROWS, FLAPPY_ROWS = logs(), flappy_events()


def _flappy_now() -> None:
    """Make the flappy events anew, ending at this moment: made when the module was
    collected, the recent ones would be older than 5 minutes when a long suite reaches it."""
    global NOW, FLAPPY_ROWS
    NOW = datetime.now(UTC).replace(microsecond=0)
    FLAPPY_ROWS = flappy_events()


@pytest.fixture(scope="module")
def imported(built, server_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinybird_projects")
    project = copy_project(folder)
    lines: dict[str, list[str]] = {"log_": [], "fla_": []}
    for prefix, source in (("log_", LOGS), ("fla_", FLAPPY)):
        assert tinybird_import.run(project, source, prefix=prefix, out=lines[prefix].append) == 1, lines[prefix]
    from cartpulse.app import create_app

    with built_copy(built, server_url, project, folder, "cartpulse_tbp") as settings:
        app = create_app(settings)
        client = app.test_client()
        auth = {"Authorization": f"Bearer {settings.admin_token}"}
        _flappy_now()
        for source, rows in (("log_logs", LOGS_ROWS), ("fla_events_api", FLAPPY_ROWS)):
            r = client.post(f"/v0/events?name={source}", data=ndjson(rows), headers=auth)
            assert r.status_code in (200, 202) and r.get_json()["successful_rows"] == len(rows), r.get_json()
        yield client, auth, lines
        app.extensions["cartpulse_stats"].flush()  # while its database exists (see conftest's app)
        app.extensions["cartpulse"].db.dispose()


def _rows(client, auth, pipe: str, **params) -> list[dict]:
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def _time(value: str) -> datetime:
    t = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# -- log_analytics ----------------------------------------------------------------------

def log_level_frequency(date_from: str, date_to: str) -> list[tuple]:
    """Per hour and log level, the rows whose hour lies between the two dates (midnights), inclusive."""
    low, high = (datetime.fromisoformat(d + "T00:00:00+00:00") for d in (date_from, date_to))
    counts = defaultdict(int)
    for row in LOGS_ROWS:
        hour = datetime.strptime(row["event_ts"][:13], "%Y-%m-%d %H").replace(tzinfo=UTC)
        if low <= hour <= high:
            counts[(hour, row["log_level"])] += 1
    return sorted((hour, level, n) for (hour, level), n in counts.items())


@pytest.mark.parametrize("date_from, date_to", [("2025-01-06", "2025-01-10"), ("2025-01-07", "2025-01-08")])
def test_log_level_frequency_answers_as_python(imported, date_from, date_to):
    client, auth, _ = imported
    rows = _rows(client, auth, "log_log_level_frequency_api", date_from=date_from, date_to=date_to)
    hours = [_time(r["hour"]) for r in rows]
    assert hours == sorted(hours), "ORDER BY hour"
    assert sorted((_time(r["hour"]), r["log_level"], r["total"]) for r in rows) == log_level_frequency(date_from, date_to)


def test_log_level_frequency_requires_both_dates_with_the_projects_message(imported):
    client, auth, _ = imported
    r = client.get("/v0/pipes/log_log_level_frequency_api.json?date_from=2025-01-06", headers=auth)
    assert r.status_code == 400 and "Must supply date_from & date_to params" in r.get_json()["error"]


# -- flappy -------------------------------------------------------------------------------

def _sessions(player: str) -> dict[str, dict]:
    found: dict[str, dict] = defaultdict(lambda: {"score": 0, "purchase": 0, "t": None})
    for row in FLAPPY_ROWS:
        if row["name"] == player:
            s = found[row["session_id"]]
            s[row["type"]] = s.get(row["type"], 0) + 1
            t = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            s["t"] = max(s["t"], t) if s["t"] else t
    return found


def last_played_games(player: str) -> list[tuple]:
    sessions = _sessions(player)
    ranked = sorted(sessions.items(), key=lambda kv: kv[1]["t"], reverse=True)[:10]
    return [(sid, s["score"], s["t"].replace(microsecond=0)) for sid, s in ranked]


def player_stats(player: str) -> list[dict]:
    scores = [s["score"] for s in _sessions(player).values()]
    return [{"player_id": player, "n_games": len(scores), "total_score": sum(scores),
             "avg_score": round(sum(scores) / len(scores), 2), "max_score": max(scores)}]


def personalization(player: str) -> list[dict]:
    recent = [s for s in _sessions(player).values() if s["t"] >= NOW - timedelta(minutes=5)]
    if not recent:
        return []
    games, score, purchases = len(recent), sum(s["score"] for s in recent), sum(s["purchase"] for s in recent)
    return [{"offer": int(games >= 3 and score <= 30 and purchases == 0)}]


@pytest.mark.parametrize("player", ["player0", "player1", "player3"])
def test_flappy_endpoints_answer_as_python(imported, player):
    client, auth, _ = imported
    got = _rows(client, auth, "fla_api_last_played_games", player_param=player)
    assert [(r["session_id"], r["total_score"], _time(r["t"])) for r in got] == last_played_games(player)
    stats = _rows(client, auth, "fla_api_player_stats", player_param=player)
    assert [{**r, "avg_score": round(r["avg_score"], 9)} for r in stats] == player_stats(player)
    assert _rows(client, auth, "fla_api_personalization", player_param=player) == personalization(player)
    assert personalization("player0") and personalization("player1"), "some sessions must be recent"


def test_a_required_parameter_with_a_default_is_required(imported):
    client, auth, _ = imported
    r = client.get("/v0/pipes/fla_api_player_stats.json", headers=auth)
    assert r.status_code == 400 and "player_param" in r.get_json()["error"]


# -- what is refused ------------------------------------------------------------------------

REFUSED = {
    "log_": [
        "refused: datasources/calls_by_ip_per_minute.datasource: -: ENGINE_TTL of a materialized pipe's target",
        "refused: pipes/calls_by_ip_per_minute_materialize.pipe: node mv: ENGINE_TTL of a materialized pipe's target",
        ("refused: endpoints/average_calls_per_ip_api.pipe: node merge: calls_by_ip_per_minute: the materialized pipe "
         "into it was refused"),
        "refused: endpoints/average_error_count_api.pipe: node total_errors_per_function: path: function path is not supported",
        "refused: endpoints/error_frequency_api.pipe: node endpoint: path: function path is not supported",
        "refused: endpoints/error_per_api.pipe: node endpoint: column: {{ column }} changes the SQL per request",
        "refused: endpoints/function_errors_api.pipe: node endpoint: path: function path is not supported",
        ("refused: endpoints/ips_exceeding_avg_calls_per_minute_api.pipe: node merge: calls_by_ip_per_minute: the "
         "materialized pipe into it was refused"),
        ("refused: endpoints/ips_with_most_calls_api.pipe: node endpoint: calls_by_ip_per_minute: the materialized pipe "
         "into it was refused"),
        "refused: endpoints/top_functions_api.pipe: node endpoint: path: function path is not supported"],
    "fla_": ["refused: pipes/api_leaderboard.pipe: node last_game: ARG_MAX: function ARG_MAX is not supported"],
}


def test_what_does_not_import_is_refused_one_line_each(imported):
    _, _, lines = imported
    for prefix, expected in REFUSED.items():
        refused = [line for line in lines[prefix] if line.startswith("refused")]
        assert len(refused) == len(expected) and all(line.startswith(want) for line, want in zip(refused, expected)), refused
    assert "made: pipes/mat_player_stats.pipe: materialized pipe into mv_player_stats: an endpoint reading " \
           "mv_player_stats aggregates fla_events_api itself (-State/-Merge as plain aggregates)" in lines["fla_"]
    assert any(line.startswith("note: datasources/logs.datasource: TOKEN app APPEND not imported") for line in lines["log_"])


#: Each imported endpoint's derivation (docs/realtime.md, "Derived endpoints"): derived,
#: or the construct that keeps it out of the class, as `GET /v0/pipes/<name>` says.
DERIVATIONS = {
    # Its hours bucket by date_trunc (derivable), but its range is on that bucket, cast to dates.
    "log_log_level_frequency_api": "WHERE date_trunc('HOUR', event_ts) BETWEEN CAST($1 AS DATE)",
    "fla_api_last_played_games": "count(*) FILTER (...)",
    "fla_api_player_stats": "the WITH query agg: GROUP BY",
    "fla_api_personalization": "the WITH query stats: GROUP BY",
}


@pytest.mark.parametrize("pipe, says", DERIVATIONS.items())
def test_each_imported_endpoint_says_whether_it_is_derived(imported, pipe, says):
    client, auth, _ = imported
    said = client.get(f"/v0/pipes/{pipe}", headers=auth).get_json()["derivation"]
    if says == "derived":
        assert said["derivable"] is True and said["answered_from"] == "derived", said
    else:
        assert said["derivable"] is False and said["reason"].startswith(says), said
