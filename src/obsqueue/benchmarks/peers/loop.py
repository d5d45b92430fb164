"""A private asyncio event loop in a daemon thread, for the peers whose API is asynchronous
(pgqueuer, procrastinate, BullMQ): the ``TargetSession`` interface stays synchronous and
thread-safe, the library runs on its own loop as its users' async code would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "until_set"]

T = TypeVar("T")

#: How long one call may take before the session gives up on it (a hung server).
CALL_TIMEOUT_S = 60.0


class LoopThread:
    """One event loop, run forever in one daemon thread until ``close``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the loop and wait for its result (re-raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        """Cancel what is left on the loop, stop it and join its thread."""
        if self.loop.is_closed():
            return
        self.run(_cancel_others(), timeout_s=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def _cancel_others() -> None:
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def until_set(stop: threading.Event, then: asyncio.Event, poll_s: float = 0.05) -> None:
    """Wait on the loop for the thread event ``stop`` (polling), then set ``then``."""
    while not stop.is_set():
        await asyncio.sleep(poll_s)
    then.set()
