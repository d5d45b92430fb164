"""The engine URLs ``obsqueue scorecard`` runs when given none: every registered engine.

One URL per engine class in the registry (an alias such as ``postgres://`` for the class of
``postgresql://`` is skipped), in the registry's order, with no host or file so that obsqueue
provides the server or the file; the native Redis engine also on each non-durable server
profile, so the scorecard shows what those profiles lose and gain.
"""

from __future__ import annotations

from obsqueue.engines import registered_engines
from obsqueue.servers.redis import REDIS_PROFILES

__all__ = ["PROFILED", "engine_urls"]

#: Schemes that also run on their server's non-durable profiles.
PROFILED = {"redis": REDIS_PROFILES}


def engine_urls() -> list[str]:
    urls, seen = [], set()
    for scheme, entry in registered_engines().items():
        if entry.target in seen:
            continue
        seen.add(entry.target)
        urls.append(f"{scheme}://")
        for profile in PROFILED.get(scheme, {}):
            if profile != "durable":
                urls.append(f"{scheme}://?server_durability={profile}")
    return urls
