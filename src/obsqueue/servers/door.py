"""Bad engine URLs refused at the door: once, before a run starts, with every problem named.

``refuse_bad_urls(urls, env)`` checks each URL the way ``resolve_engine`` will use it — a scheme
(``scheme://``), a URL that parses (brackets, a numeric port), a registered scheme, an installed
driver, a ``server_durability`` profile the engine's server has — plus ``OBSQUEUE_SERVER_SOURCES``,
and returns the message that names every bad URL and lists the registered schemes, or None when
all are good. The CLI prints it and exits 2 instead of letting every test of the suite error.
Nothing here reaches a server: an unreachable one is a property of the engine (P14) or an
*unavailable* engine, not bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from obsqueue.engines import engine_class, registered_engines, scheme_of
from obsqueue.errors import InvalidMessageError, ObsqueueError, redact_url
from obsqueue.servers.provision import PROFILES, source_order
from obsqueue.servers.resolve import DURABLE, split_server_durability

__all__ = ["refuse_bad_urls", "url_problem"]


def url_problem(url: str) -> str | None:
    """What is wrong with one engine URL, or None."""
    try:
        scheme_of(url)  # no scheme:// at all
        plain, durability = split_server_durability(url)
        parts = urlsplit(plain)
        _ = parts.port  # a non-numeric or out-of-range port raises ValueError
        cls = engine_class(plain)
    except InvalidMessageError as exc:
        # the registry lists the known schemes in its message; the refusal lists them once
        return exc.problem.partition("; known: ")[0]
    except ValueError as exc:
        return f"malformed URL: {exc}"
    except ObsqueueError as exc:
        return str(exc)
    if durability == DURABLE:
        return None
    if cls.server_kind is None:
        return f"server_durability={durability} applies only to engines with a server"
    profiles = sorted(PROFILES.get(cls.server_kind, {DURABLE: {}}))
    if durability not in profiles:
        return f"server_durability={durability}: a {cls.server_kind} server has {profiles}"
    return None


def refuse_bad_urls(urls: Iterable[str], env: Mapping[str, str]) -> str | None:
    """The refusal message naming every bad URL (and a bad source order), or None."""
    problems = [
        f"  {_shown(url)}: {problem}" for url in urls if (problem := url_problem(url)) is not None
    ]
    try:
        source_order(env)
    except InvalidMessageError as exc:
        problems.append(f"  {exc}")
    if not problems:
        return None
    schemes = ", ".join(f"{scheme}://" for scheme in sorted(registered_engines()))
    return "\n".join(
        [
            "refusing to run; nothing was started:",
            *problems,
            f"registered schemes: {schemes}",
            "(`obsqueue engines` shows which are usable here)",
        ]
    )


def _shown(url: str) -> str:
    """The URL as the user wrote it, its password redacted (verbatim when it does not parse)."""
    redacted = redact_url(url)
    return url if redacted == "<unparseable URL>" else redacted
