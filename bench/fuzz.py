"""The long fuzz of the HTTP front's framing (issue #26): ``make fuzz``.

    make fuzz                        # FUZZ_EXAMPLES=10000 (the suite runs 200)
    FUZZ_EXAMPLES=50000 make fuzz    # longer

Runs tests/test_http_differential.py (the llhttp differential test and the two fuzz
tests: the framer alone gets five times FUZZ_EXAMPLES, the front over a socket
FUZZ_EXAMPLES) with hypothesis' statistics, and writes the figures of the run to
bench/fuzz.md: examples run, failing examples and time, per test. Fails as pytest does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench" / "fuzz.md"
TESTS = "tests/test_http_differential.py"
STATISTICS = re.compile(r"(?ms)^(tests/\S+::(\w+)):\s*$(.*?)(?=^tests/|\Z)")
EXAMPLES = re.compile(r"(\d+) passing, (\d+) failing")
PHASE_TIME = re.compile(r"during \w+ phase \(([\d.]+) seconds\)")


def main() -> int:
    examples = os.environ.setdefault("FUZZ_EXAMPLES", "10000")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", TESTS, "-p", "no:cacheprovider", "-q",
                           "--hypothesis-show-statistics"], cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    sys.stdout.write(done.stdout + done.stderr)
    summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    rows = []
    for _, name, text in STATISTICS.findall(done.stdout):
        counts = [tuple(map(int, found)) for found in EXAMPLES.findall(text)]
        seconds = sum(float(s) for s in PHASE_TIME.findall(text))
        passing, failing = sum(c[0] for c in counts), sum(c[1] for c in counts)
        rows.append(f"| `{name}` | {passing:,} | {failing} | {seconds:.1f} |")
    REPORT.write_text("\n".join([
        "# The HTTP front's fuzz (`make fuzz`)",
        "",
        (f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `FUZZ_EXAMPLES={examples}`, "
         f"{os.cpu_count()} CPUs; {elapsed:.0f} s in all. pytest: {summary}"),
        "",
        "| test | examples run (passing) | failing examples | seconds (hypothesis' phases) |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        "`make test` runs the same tests with `FUZZ_EXAMPLES=200` (the framer 1,000 examples).",
        "What they check: tests/test_http_differential.py; why: README, \"The HTTP front\".",
        "",
    ]))
    print(f"written to {REPORT.relative_to(ROOT)}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
