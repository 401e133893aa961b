"""Open files for the HTTP front: every connection is a file descriptor.

The default soft ``RLIMIT_NOFILE`` is often 1024, and a worker past it fails ``accept()``
(EMFILE): asyncio then stops accepting for a second at a time, so new clients hang with no
answer at all. At start up the soft limit is raised to the hard one (no privilege needed),
and a worker holds at most ``HTTP_MAX_CONNECTIONS`` connections, fewer when the limit
leaves less room: what is past the cap is answered 503 (with Retry-After) and closed, and
the descriptors the worker needs besides its sockets (the database pool, spooled bodies,
logs) stay free.
"""

from __future__ import annotations

import resource

#: Descriptors a worker keeps for other than client sockets, besides two per app thread
#: (its database connection and a spooled body).
RESERVE = 64


def raise_soft_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:  # some kernels refuse an infinite soft limit
        hard = max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    except (ValueError, OSError):
        return soft
    return hard


def connection_cap(configured: int, threads: int) -> int:
    """Most open connections one worker keeps: ``configured``, or fewer when the soft
    limit on open files would not leave the worker room for the rest."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - RESERVE - 2 * threads))
