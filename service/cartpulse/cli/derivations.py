"""What a build says about each endpoint: derivable from its SQL, or served as written.

Printed after every ``dbt run``/``dbt build`` that CartPulse runs (``cartpulse build``,
``cartpulse dbt run …``, ``cartpulse run``), one line per endpoint, so that an author
learns at once whether the SQL they wrote is in the class CartPulse derives rollups for
(project/derivation.py) and, when it is not, which construct put it outside.
"""

from __future__ import annotations

from cartpulse.project.endpoints import Catalog


def lines(catalog: Catalog) -> list[str]:
    """One line per endpoint, by name."""
    said = []
    for name, endpoint in sorted(catalog.all().items()):
        if endpoint.derivation is None:
            said.append(f"endpoint {name}: served as written: {endpoint.as_written}")
        else:
            rollups = ", ".join(r.name for r in endpoint.rollups)
            said.append(f"endpoint {name}: derivable, from {rollups}")
    return said


def report(settings) -> None:
    """Print the lines for the project's endpoints as the build just left them."""
    for line in lines(Catalog(settings.target_dir / "manifest.json")):
        print(line, flush=True)


def report_after(settings, argv: list[str], returncode: int) -> int:
    """Report after ``dbt <argv>`` when it ran or built models (not with ``--quiet``);
    pass its exit status on."""
    if argv[:1] in (["run"], ["build"]) and not {"--quiet", "-q"} & set(argv):
        report(settings)
    return returncode
