"""The conformance suite's tests. A downstream project runs them on its own engine with::

    # tests/test_obsqueue_conformance.py
    from obsqueue.conformance.suite import *  # noqa: F403

and an ``obsqueue_engine_spec`` fixture in its conftest.py returning an ``EngineSpec``.
"""

from obsqueue.conformance.suite.test_data import TestClear, TestDepth, TestFidelity
from obsqueue.conformance.suite.test_dedupe import TestDedupe
from obsqueue.conformance.suite.test_durability import TestDurableEnqueue, TestDurableProcessing
from obsqueue.conformance.suite.test_input import TestBadInput, TestClose
from obsqueue.conformance.suite.test_order import TestExclusiveSession, TestFifo
from obsqueue.conformance.suite.test_recovery import (
    TestFencing,
    TestStallRecovery,
    TestStartupRecovery,
)
from obsqueue.conformance.suite.test_retries import TestBoundedRetries
from obsqueue.conformance.suite.test_wakeup import TestStopAndIdle, TestWakeup

__all__ = [
    "TestBadInput",
    "TestBoundedRetries",
    "TestClear",
    "TestClose",
    "TestDedupe",
    "TestDepth",
    "TestDurableEnqueue",
    "TestDurableProcessing",
    "TestExclusiveSession",
    "TestFencing",
    "TestFidelity",
    "TestFifo",
    "TestStallRecovery",
    "TestStartupRecovery",
    "TestStopAndIdle",
    "TestWakeup",
]
