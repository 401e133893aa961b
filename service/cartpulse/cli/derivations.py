"""dbt as CartPulse runs it: derived first, and a line per endpoint after.

Every ``dbt run``/``dbt build`` that CartPulse runs (``cartpulse build``, ``cartpulse dbt
run …``, ``cartpulse run``) first derives the endpoints' rollups and answers
(ops/derive.py), and selects them too when the command selects models; afterwards it
prints one line per endpoint, so that an author learns at once whether the SQL they wrote
is answered from derived rollups and, when it is not, which construct put it outside the
class (project/derivation.py).
"""

from __future__ import annotations

from cartpulse.project.endpoints import Catalog


def lines(catalog: Catalog) -> list[str]:
    """One line per endpoint, by name."""
    said = []
    for name, endpoint in sorted(catalog.all().items()):
        if endpoint.derivation is None:
            said.append(f"endpoint {name}: served as written: {endpoint.as_written}")
        elif endpoint.answer:
            said.append(f"endpoint {name}: derived, from {', '.join(r.name for r in endpoint.rollups)}")
        else:
            said.append(f"endpoint {name}: derivable, not derived since its SQL changed: served as written"
                        " until `cartpulse build`")
    return said


def report(settings) -> None:
    """Print the lines for the project's endpoints as the build just left them."""
    for line in lines(Catalog(settings.target_dir / "manifest.json")):
        print(line, flush=True)


def builds(argv: list[str]) -> bool:
    return argv[:1] in (["run"], ["build"])


def derived_first(settings, url: str, argv: list[str], dbt=None) -> list[str]:
    """Before ``dbt <argv>`` builds models: derive (ops/derive.py), and when it selects
    models, select the derived ones too, so that ``--select my_endpoint`` builds the
    rollups and the answer it is served from. Returns the arguments to run."""
    if not builds(argv):
        return argv
    from cartpulse.ops.derive import FOLDERS, derive

    derive(settings, url, dbt=dbt)
    if any(a in ("--select", "-s") or a.startswith("--select=") for a in argv):
        return [*argv, "--select", *(f"path:{folder}" for folder in FOLDERS)]
    return argv


def dbt_deriving(settings, url: str, argv: list[str]) -> int:
    """``dbt <argv>``, derived first when it builds models, and reported after (not with
    ``--quiet``); its exit status."""
    from cartpulse.ops.dbt_runner import run_dbt

    argv = derived_first(settings, url, argv)
    returncode = run_dbt(settings, url, *argv, check=False).returncode
    if builds(argv) and not {"--quiet", "-q"} & set(argv):
        report(settings)
    return returncode
