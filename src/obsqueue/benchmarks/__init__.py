"""Benchmarks: workloads (TOML data files) run through ``WorkloadTarget``s in separate producer
and consumer processes, beside the raw backend (the ceiling) and the peer libraries, in rounds.

``obsqueue bench`` is ``cli.py``; a run goes ``runner.py`` (per engine URL: server, lineup,
rounds, result) -> ``rounds.py`` (interleaving, medians, ratios within a round) -> ``measure.py``
(per workload measure) -> ``traffic.py`` / ``probes.py`` (one run: ``procs.py`` starts the
``workers.py`` processes; ``loadgen.py`` plans the sends; ``hist.py`` the HdrHistograms).
``workload.py`` reads and checks workload files; ``document.py`` builds and validates results
(schema in ``schema/``); ``engine_target.py`` is an obsqueue engine as a target, ``null_target.py``
the harness's own references; ``durability.py`` the durability sweep; ``selfcheck.py`` the checks
the harness runs on itself. See ``docs/benchmarks.md``.
"""
