"""``python -m obsqueue.benchmarks.peers [URL …] [--messages N] [--sessions S] [--consumers C]``:
one closed-loop pass (``check.drain_check``) through the ceiling and every peer of each engine URL's
backend, on throwaway servers (a URL with no host gets one; ``sqlite://`` a temporary file),
printing one JSON line per target: enqueue/s, drained/s, what was missing, duplicated or out of
order, hook faults and stray sessions (``check.DrainCheck``), and the guarantees it holds. The quick
look; the harness's workloads measure."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from obsqueue.benchmarks.peers import targets_for
from obsqueue.benchmarks.peers.check import drain_check
from obsqueue.servers import resolve_engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obsqueue.benchmarks.peers")
    parser.add_argument("urls", nargs="*", default=["sqlite://", "postgresql://", "redis://"])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--consumers", type=int, default=4)
    args = parser.parse_args(argv)
    failed = False
    for url in args.urls:
        with (
            tempfile.TemporaryDirectory(prefix="obsq-peers-") as workdir,
            resolve_engine(url, file_dir=Path(workdir)) as resolved,
        ):
            if resolved.unavailable:
                print(json.dumps({"engine": url, "unavailable": resolved.unavailable}))
                failed = True
                continue
            server = resolved.server.url if resolved.server is not None else None
            for target in targets_for(resolved.url, server, None):
                try:
                    check = drain_check(
                        target,
                        messages=args.messages,
                        sessions=args.sessions,
                        consumers=args.consumers,
                    )
                    durability = target.describe()["durability"]
                except Exception as exc:  # one target failing must not hide the others
                    print(json.dumps({"target": target.name, "failed": repr(exc)}), flush=True)
                    failed = True
                    continue
                finally:
                    target.cleanup()
                weaker = target.guarantees.weaker_than_obsqueue()
                line = {**check.summary(), "weaker": weaker, "durability": durability}
                print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
