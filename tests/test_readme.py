"""The README, run as written: every shell block, in order, against a live `cartpulse run`.

As datasette tests its documentation: a README change that breaks a command, or an output
the README shows that the service no longer gives, fails the suite.

- One `cartpulse run` for the whole module stands in for `make run`: a free port, a state
  folder of its own (``.cartpulse`` in a scratch checkout: a copy of the dbt project, to
  which the README adds a model, and a ``.venv`` link to this interpreter's environment,
  so ``cat .cartpulse/admin_token`` and ``.venv/bin/cartpulse`` work as written), no
  ``HOST`` in its environment, and
  ``REFRESH_SECONDS=0``: the statistics the tour shows depend on the event still being
  pending, which a scheduled refresh in the middle would change (the tour runs
  ``cartpulse dbt run`` itself, later). Its ``READ_DATABASE_URLS`` is already the replica
  that "Scaling out" makes (``cartpulse replica url`` is known before the replica
  exists), where the README restarts ``make run`` with it: until then reads go to the
  primary, as without replicas.
- Each command of a block runs in bash (``set -e``), in that folder, with the variables
  exported by the blocks before it (the tour's ``export HOST=… TB_ADMIN_TOKEN=…``). The
  only rewrite is the port: ``127.0.0.1:8000`` becomes the test server's. ``curl`` fails on
  an HTTP error status (``--fail-with-body``), so a command that gets a 4xx fails too.
- What the README shows as output is checked: ``# …`` lines right under a command (each
  must match a line the command printed, ``…`` standing for any text, spacing after
  ``:`` and ``,`` aside), and a JSON block announced by
  ``<!-- readme-test: output of <the command> -->`` (compared as JSON: same keys and
  values, ``"…"`` for any string, ``elapsed`` any number).
- A block that cannot run here says so right above it, visibly:
  ``<!-- readme-test: skip (why) -->``. It is reported as a skipped test, with the reason.
- A file the README has you write (``<!-- readme-test: file models/… -->``) is written
  there, in the scratch checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cartpulse.storage.embedded import EmbeddedPostgres
from support import CARTPULSE, MISLEADING_AT_STOP, as_from_a_terminal, free_port, server_folder, wait_http

README = Path(__file__).resolve().parents[1] / "README.md"
SHELLS = ("sh", "bash", "shell")
MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<kind>skip|output of|file)\s*(?P<arg>.*?)\s*-->")
#: What the scratch checkout copies of this one: the dbt project, which the README adds a model to.
PROJECT = ("dbt_project.yml", "models", "macros", "seeds", "data-tests", "profiles", "tests/fixtures/tinybird")
#: JSON keys whose values change from run to run (timings): any number will do.
VARYING = {"elapsed"}
README_PORT = "127.0.0.1:8000"


@dataclass
class Block:
    line: int                   # where its fence opens, for messages
    section: str
    lang: str
    text: str
    skip: str | None = None     # the reason given by a skip marker
    file: str | None = None     # where a file marker says the block goes, in the checkout
    outputs: dict[str, str] = field(default_factory=dict)  # command -> the JSON block showing its output

    @property
    def name(self) -> str:
        return f"L{self.line} {self.section}"


def blocks(text: str = README.read_text()) -> list[Block]:
    """The README's fenced blocks, with the markers that precede them (blank lines allowed
    between); a marker not followed by a block, or an output marker whose command is not
    in the shell block above it, is an error."""
    found: list[Block] = []
    lines, section, marker, i = text.splitlines(), "", None, 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith(("## ", "### ")):
            section = line.lstrip("#").strip()
        if found_marker := MARKER.fullmatch(line):
            assert marker is None, f"README line {i + 1}: two readme-test markers for one block"
            marker = (i + 1, found_marker["kind"], found_marker["arg"])
        elif line.startswith("```") and len(line) > 3:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            block = Block(i + 1, section, line[3:].strip(), "\n".join(lines[i + 1:end]) + "\n")
            if marker and marker[1] == "skip":
                assert re.fullmatch(r"\(.+\)", marker[2]), f"README line {marker[0]}: skip needs a (reason)"
                block.skip = marker[2][1:-1]
            elif marker and marker[1] == "file":
                block.file = marker[2]
            elif marker:
                shell = next((b for b in reversed(found) if b.lang in SHELLS), None)
                assert shell and marker[2] in [c for c, _ in commands(shell.text)], \
                    f"README line {marker[0]}: no command {marker[2]!r} in the shell block above"
                shell.outputs[marker[2]] = block.text
            found.append(block)
            marker, i = None, end
        elif line and marker:
            raise AssertionError(f"README line {marker[0]}: a readme-test marker must stand right above a block")
        i += 1
    assert marker is None, f"README line {marker[0]}: a readme-test marker must stand right above a block"
    return found


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each command of a shell block. A
    command ends at a line without a trailing backslash; the ``# `` lines right under it
    are its output as the README shows it; other comment lines are comments."""
    result: list[tuple[str, list[str]]] = []
    pending, under_a_command = "", False
    for line in text.splitlines():
        stripped = line.strip()
        if pending:
            pending += "\n" + line
        elif stripped.startswith("# ") and under_a_command:
            result[-1][1].append(stripped[2:])
            continue
        elif not stripped or stripped.startswith("#"):
            under_a_command = False
            continue
        else:
            pending = line
        if not pending.endswith("\\"):
            result.append((pending, []))
            pending, under_a_command = "", True
    return result


def normalized(text: str) -> str:
    """Spacing around JSON punctuation dropped: the README shows `{"a": 1}`, Flask `{"a":1}`."""
    return re.sub(r"\s*([,:{}\[\]])\s*", r"\1", text.strip())


def line_matches(shown: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in normalized(shown).split("…"))
    return re.fullmatch(pattern, normalized(printed)) is not None


def json_matches(shown, got, key: str | None = None) -> bool:
    if key in VARYING:
        return isinstance(shown, (int, float)) and isinstance(got, (int, float))
    if isinstance(shown, dict):
        return isinstance(got, dict) and shown.keys() == got.keys() and all(
            json_matches(shown[k], got[k], k) for k in shown)
    if isinstance(shown, list):
        return isinstance(got, list) and len(shown) == len(got) and all(map(json_matches, shown, got))
    if isinstance(shown, str) and "…" in shown:
        return isinstance(got, str) and line_matches(shown, got)
    return shown == got


BLOCKS = [b for b in blocks() if b.lang in SHELLS or b.file]


def test_every_shell_block_runs_or_says_why_not():
    """Nothing is left out silently, and most blocks run: skipping is for what cannot run
    in a test (`make run` itself, a TimescaleDB server)."""
    shells = [b for b in BLOCKS if b.lang in SHELLS]
    ran = [b for b in shells if b.skip is None]
    assert all(b.skip.strip() for b in shells if b.skip is not None)
    assert len(ran) >= 15 and len(ran) > 3 * (len(shells) - len(ran)), [b.name for b in shells if b.skip]


def test_how_the_readme_is_read():
    """The rules above, on small pieces of markdown: a misplaced or malformed marker is an
    error, not a block quietly run or quietly left out."""
    assert blocks("<!-- readme-test: skip (no server) -->\n\n```sh\nmake run\n```\n")[0].skip == "no server"
    for wrong, says in [("<!-- readme-test: skip (x) -->\ntext\n```sh\nls\n```\n", "right above a block"),
                        ("<!-- readme-test: skip -->\n```sh\nls\n```\n", "skip needs a (reason)"),
                        ("```sh\nls\n```\n<!-- readme-test: output of pwd -->\n```json\n{}\n```\n", "no command"),
                        ("```sh\nls\n```\n<!-- readme-test: skip (x) -->\n", "right above a block")]:
        with pytest.raises(AssertionError, match=re.escape(says)):
            blocks(wrong)
    assert commands("a \\\n  b\n# out\n# more\n\n# a comment\nc  # trailing\n") == [
        ("a \\\n  b", ["out", "more"]), ("c  # trailing", [])]
    assert line_matches('{"name": "x", "token": "cp_…"}', '{"name":"x","token":"cp_abc"}')
    assert not line_matches('{"rows": 1}', '{"rows":12}')
    assert json_matches({"a": "…", "elapsed": 0.5, "n": [1.0]}, {"a": "z", "elapsed": 0.01, "n": [1]})
    assert not json_matches({"a": 1}, {"a": 1, "b": 2}) and not json_matches({"a": [1]}, {"a": [1, 1]})


@pytest.fixture(scope="module")
def readme_server():
    """`cartpulse run` as `make run` starts it, from a scratch folder laid out like a checkout."""
    if os.environ.get("CARTPULSE_TEST_DATABASE_URL"):
        pytest.skip("the README runs on the embedded PostgreSQL: exercised in that pass")
    with server_folder("cartpulse-readme-") as work, open(work / "run.log", "w+") as log:
        (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
        for name in PROJECT:
            (shutil.copytree if (README.parent / name).is_dir() else shutil.copy)(README.parent / name, work / name)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "READ_DATABASE_URLS", "TB_ADMIN_TOKEN", "HOST", "PORT", "METRICS_TOKEN")}
        env.update(CARTPULSE_PROJECT_DIR=str(work), CARTPULSE_STATE_DIR=str(work / ".cartpulse"),
                   DBT_TARGET_PATH=str(work / "target"))
        replica = subprocess.run([CARTPULSE, "replica", "url"], env=env, check=True, capture_output=True, text=True)
        port = free_port()
        proc = subprocess.Popen([CARTPULSE, "run"], preexec_fn=as_from_a_terminal, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**env, "PORT": str(port), "REFRESH_SECONDS": "0",
                                                             "READ_DATABASE_URLS": replica.stdout.strip()})
        try:
            try:
                wait_http(f"http://127.0.0.1:{port}/readyz", proc, seconds=300)
            except AssertionError as err:
                log.seek(0)
                raise AssertionError(f"{err}; its output:\n{log.read()[-5000:]}") from None
            yield Session(work, port, env, proc, log)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for left in ("pgdata", "replica1"):  # when a test failed before the README stopped them
                EmbeddedPostgres(work / ".cartpulse" / left).stop("immediate")


class Session:
    """The shell session the README's blocks share: its folder, and the variables exported
    by the blocks run so far (a variable set without ``export`` lasts for its block)."""

    MARK = "\n@@readme-test: a command done@@\n"
    PRELUDE = ('set -e\ncurl() { command curl --fail-with-body "$@"; }\n'
               'done_() { printf "\\n@@readme-test: a command done@@\\n" | tee /dev/stderr; }\n'
               'test -f .exports && source .exports\n')

    def __init__(self, work: Path, port: int, env: dict, proc: subprocess.Popen, log):
        self.work, self.port, self.env, self.proc, self.log = work, port, env, proc, log

    def here(self, text: str) -> str:
        """README text with the test server's port for make run's."""
        return text.replace(README_PORT, f"127.0.0.1:{self.port}")

    def run(self, commands: list[str]) -> tuple[list[tuple[str, str]], int, str]:
        """Run a block's commands in one bash, as typed in a terminal; return what each
        command printed (stdout, stderr) up to the one that failed, if any, the exit
        status, and the whole output for messages."""
        script = self.PRELUDE + "".join(f"{self.here(c)}\ndone_\n" for c in commands) + "export -p > .exports\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.work, env=self.env, capture_output=True, text=True,
                              timeout=300)
        printed = list(zip(done.stdout.split(self.MARK), done.stderr.split(self.MARK)))
        return printed, done.returncode, f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block(block: Block, readme_server: Session):
    if block.skip:
        pytest.skip(f"README says: {block.skip}")
    if block.file:  # a file the README has you write: into the scratch checkout
        (readme_server.work / block.file).write_text(block.text)
        return
    steps = commands(block.text)
    printed, status, said = readme_server.run([command for command, _ in steps])
    assert status == 0, f"README line {block.line}: {steps[min(len(printed), len(steps)) - 1][0]}\n{said}"
    for (command, shown), (stdout, stderr) in zip(steps, printed):
        lines = (stdout + "\n" + stderr).splitlines()
        for line in shown:
            assert any(line_matches(readme_server.here(line), p) for p in lines), \
                f"README line {block.line}: {command}\nshows {line!r}\n{said}"
        if command in block.outputs:
            assert json_matches(json.loads(readme_server.here(block.outputs[command])), json.loads(stdout)), \
                f"README line {block.line}: {command}\nshows {block.outputs[command]}\n{said}"


def test_ctrl_c_stops_the_readme_server_quickly_and_quietly(readme_server: Session):
    """Last, on the server the README used: Ctrl-C (SIGINT to its process group, as a
    terminal sends it) while requests are in flight stops the API, and the embedded
    database it started, before gunicorn's graceful timeout (10 s, when it would SIGKILL a
    worker), with no "SIGKILL! Perhaps out of memory?" and no leaked semaphores."""
    base, proc = f"http://127.0.0.1:{readme_server.port}", readme_server.proc
    assert proc.poll() is None, "the server stopped before Ctrl-C"
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                urllib.request.urlopen(f"{base}/v0/pipes", timeout=5).read()
            except OSError:  # 401 (no token) or refused once stopped: load is all that is wanted
                pass

    clients = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for c in clients:
        c.start()
    try:
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        stop.set()
        for c in clients:
            c.join()
    readme_server.log.seek(0)
    out = readme_server.log.read()
    assert proc.returncode == 0, out[-3000:]
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    for words in (*MISLEADING_AT_STOP, "leaked semaphore", "Traceback"):
        assert words not in out, out[-3000:]
    assert not EmbeddedPostgres(readme_server.work / ".cartpulse" / "pgdata").running()
