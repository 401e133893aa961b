"""A pipe's answer in Prometheus' text format (``/v0/pipes/<name>.prometheus``).

As Tinybird does it: a pipe whose rows are metrics, one per row, in the columns ``name``
(the metric) and ``value`` (a number), optionally ``help``, ``type`` (counter, gauge,
histogram, summary, untyped), ``timestamp`` (written as given: the exposition
format reads epoch milliseconds) and ``labels`` (an object of strings: a ``jsonb`` column in PostgreSQL).
``# HELP`` and ``# TYPE`` are written once per metric, before its first sample, so the
rows of one metric should come together. A pipe without ``name`` and ``value`` is a
400 naming what is missing: the format cannot be made from other columns without
guessing.
"""

from __future__ import annotations

import math
import re

from cartpulse.errors import ApiError

#: Metric and label names Prometheus accepts.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _escape(text: str, quote: bool = True) -> str:
    text = str(text).replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "is_finite"):
        raise ApiError(400, f"prometheus format: value must be a number, got {str(value)[:40]!r}")
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def prometheus_text(meta: list[dict], rows: list[tuple]) -> str:
    names = [m["name"] for m in meta]
    missing = [c for c in ("name", "value") if c not in names]
    if missing:
        raise ApiError(400, f"the prometheus format needs the columns name and value; this pipe lacks"
                            f" {', '.join(missing)} (see docs/pipes.md)")
    lines, described = [], set()
    for row in rows:
        record = dict(zip(names, row))
        metric = str(record["name"])
        if not _NAME.fullmatch(metric):
            raise ApiError(400, f"prometheus format: {metric[:60]!r} is not a metric name")
        if metric not in described:
            described.add(metric)
            if record.get("help"):
                lines.append(f"# HELP {metric} {_escape(record['help'], quote=False)}")
            kind = record.get("type")
            if kind:
                if kind not in TYPES:
                    raise ApiError(400, f"prometheus format: type {str(kind)[:40]!r} is not one of {', '.join(TYPES)}")
                lines.append(f"# TYPE {metric} {kind}")
        labels = record.get("labels") or {}
        if not isinstance(labels, dict):
            raise ApiError(400, "prometheus format: labels must be an object (a jsonb column)")
        bad = [k for k in labels if not _LABEL.fullmatch(str(k))]
        if bad:
            raise ApiError(400, f"prometheus format: {str(bad[0])[:60]!r} is not a label name")
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        sample = f"{metric}{{{text}}} {_number(record['value'])}" if text else f"{metric} {_number(record['value'])}"
        if record.get("timestamp") is not None:
            sample += f" {int(record['timestamp'])}"
        lines.append(sample)
    return "".join(line + "\n" for line in lines)
