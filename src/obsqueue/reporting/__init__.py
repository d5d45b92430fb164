"""The scorecard: results JSON in, ``reports/scorecard.{md,html}`` and ``reports/charts/`` out.

Reads ``reports/results/*.json`` with pandas — conformance, benchmark, microbench
(pytest-benchmark), privacy and facts results — and imports no engine, suite or harness code.

* ``load.py`` reads every file by kind and schema version; anything it cannot read is a *gap*
  with its reason, never a traceback; ``provenance.py`` says which machine and commit each row
  comes from;
* ``frames.py`` turns documents into tidy DataFrames;
* ``matrix.py``, ``performance.py``, ``decisions.py``, ``whom.py`` and ``charts.py`` build the
  sections; ``render.py`` writes Markdown and a self-contained HTML page;
* ``job.py`` and ``progress.py`` are ``obsqueue scorecard``, the main job; ``cli.py`` the
  ``report`` and ``scorecard`` commands.
"""
