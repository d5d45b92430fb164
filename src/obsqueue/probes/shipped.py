"""The engine URLs ``obsqueue scorecard`` runs when given none: the shipped engines.

They come from the one list CI and ``nox -s conformance`` run too,
``conformance/shipped_engines.toml`` (the native Redis engine also on its non-durable server
profiles, so the scorecard shows what those profiles lose and gain). The Node.js engines are
left out where no ``node`` is on PATH: they would only read *unavailable*.
"""

from __future__ import annotations

import shutil

from obsqueue.conformance.declared import shipped_engines

__all__ = ["engine_urls", "engine_weights"]


def engine_urls() -> list[str]:
    have_node = shutil.which("node") is not None
    return [
        engine.url
        for engine in shipped_engines()
        if have_node or not engine.url.startswith("exec+")
    ]


def engine_weights() -> dict[str, float]:
    """Each shipped engine's ``weight``: its suite's expected duration, relative to the others."""
    return {engine.url: engine.weight for engine in shipped_engines()}
