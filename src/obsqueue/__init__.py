"""obsqueue: which queue engine to trust with a durable, per-session stream of observations.

``open_engine(url)`` opens an engine; every engine implements ``ObservationQueueEngine``.
"""

from obsqueue.engines import open_engine, registered_engines
from obsqueue.engines.base import (
    Capability,
    Claim,
    EnqueueResult,
    ObservationQueueEngine,
    PendingMessage,
    PendingMessageWithId,
    RawMessage,
)
from obsqueue.errors import (
    EngineClosedError,
    EngineUnavailableError,
    InvalidMessageError,
    ObsqueueError,
    StaleClaimError,
)

__version__ = "0.1.0"

__all__ = [
    "Capability",
    "Claim",
    "EngineClosedError",
    "EngineUnavailableError",
    "EnqueueResult",
    "InvalidMessageError",
    "ObservationQueueEngine",
    "ObsqueueError",
    "PendingMessage",
    "PendingMessageWithId",
    "RawMessage",
    "StaleClaimError",
    "__version__",
    "open_engine",
    "registered_engines",
]
