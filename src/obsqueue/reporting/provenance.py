"""Where each result comes from: machine, commit and date, so tables never mix runs silently.

A *run* is one (machine, commit) pair. Every document gets a short run label (``R1``, ``R2`` …,
in order of first appearance); the report lists the runs in its header and, when a table holds
rows of more than one run, shows the run beside each row and says so above the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Run", "RunIndex", "document_run"]


@dataclass(frozen=True)
class Run:
    machine: str
    commit: str
    recorded_at: str


def _machine(env: dict[str, Any]) -> str:
    parts = [env.get("cpu_model"), f"{env.get('cpu_count')} CPU", env.get("platform")]
    return ", ".join(str(p) for p in parts if p and p != "None CPU") or "machine not recorded"


def document_run(document: dict[str, Any]) -> Run:
    """The run a document belongs to (pytest-benchmark's own fields for microbench JSON)."""
    if "machine_info" in document:
        info = document["machine_info"]
        cpu = info.get("cpu", {}) if isinstance(info.get("cpu"), dict) else {}
        env = {
            "cpu_model": cpu.get("brand_raw"),
            "cpu_count": cpu.get("count"),
            "platform": info.get("platform"),
        }
        commit = (document.get("commit_info") or {}).get("id")
        return Run(_machine(env), str(commit or "not recorded"), str(document.get("datetime")))
    env = document.get("environment") or {}
    commit = document.get("commit") or "not recorded"
    when = document.get("started_at") or env.get("recorded_at") or document.get("created_at")
    when = when or "not recorded"
    return Run(_machine(env), str(commit), str(when))


class RunIndex:
    """Labels runs R1, R2 … by (machine, commit) in order of first appearance.

    A document that records no commit (conformance results do not) but was written on the
    machine of an ``obsqueue scorecard`` run record, after that run started, is that run's:
    it takes the commit the record names.
    """

    def __init__(self, job: dict[str, Any] | None = None) -> None:
        self._labels: dict[tuple[str, str], str] = {}
        self.dates: dict[str, list[str]] = {}
        self.job = document_run(job) if job is not None else None

    def _commit(self, run: Run) -> str:
        job = self.job
        if job is None or run.commit != "not recorded" or run.machine != job.machine:
            return run.commit
        return job.commit if run.recorded_at >= job.recorded_at else run.commit

    def label(self, document: dict[str, Any]) -> str:
        run = document_run(document)
        key = (run.machine, self._commit(run))
        if key not in self._labels:
            self._labels[key] = f"R{len(self._labels) + 1}"
        label = self._labels[key]
        self.dates.setdefault(label, []).append(run.recorded_at)
        return label

    def rows(self) -> list[dict[str, str]]:
        """One row per run: label, machine, commit, first and last date recorded."""
        out = []
        for (machine, commit), label in self._labels.items():
            dates = sorted(self.dates.get(label, []))
            span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} … {dates[-1]}"
            out.append({"run": label, "machine": machine, "commit": commit, "recorded": span})
        return out
