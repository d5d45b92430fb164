"""Benchmarks: workloads measured through the engine contract, beside raw references.

``drain`` — one session preloaded with N messages, drained by one consumer (enqueue/s,
drained/s, per-message service time), with the raw backend doing the same work in the same run.
"""
