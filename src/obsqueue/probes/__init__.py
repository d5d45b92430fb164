"""Measurements behind the scorecard's decision rows, one engine at a time.

Each probe opens a real engine through the registry and the server resolver (never a concrete
engine module) and writes results JSON that ``obsqueue.reporting`` reads — the reports themselves
import no engine code, so these measurements live here and run as
``python -m obsqueue.probes URL… --results DIR`` (the ``obsqueue scorecard`` command does so):

* ``footprint.py`` — installed size of the engine's Python dependencies, summed from the
  installed distributions' ``RECORD`` files;
* ``privacy.py`` — is a canary payload readable as plain text in the backend's storage files
  (the SQLite file, a throwaway server's data directory)?
* ``facts.py`` — server programs and processes a throwaway server needed, the durability
  settings ``describe()`` reports, and the adapter's glue (what the library gives, what obsqueue
  adds).
"""
