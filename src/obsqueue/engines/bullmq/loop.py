"""A private asyncio event loop in a daemon thread, so an async library serves a sync contract.

BullMQ's Python package is asyncio-only; obsqueue's contract is synchronous and thread-safe. The
engine owns one :class:`LoopThread`: every contract call submits one coroutine to it with
:meth:`LoopThread.run` and blocks for the answer, so callers on any thread share one loop, one
Redis pool and BullMQ's objects without locks. :meth:`LoopThread.close` runs the engine's async
teardown on the loop, cancels whatever is still running there (a consumer blocked in its wait),
waits for those tasks to finish, shuts down async generators and the default executor, and
joins the thread, so no "Task was destroyed but it is pending" or unclosed-loop warning follows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from obsqueue.errors import EngineClosedError, EngineUnavailableError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop running in its own thread until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout_s: float) -> T:
        """Run ``coro`` on the loop and return its result; its exceptions propagate. A call
        that outlives ``timeout_s`` is cancelled and reported unavailable, never left hanging."""
        if self._closed:
            coro.close()
            raise EngineClosedError("this engine's event loop was closed; open a new engine")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise EngineUnavailableError(
                f"a BullMQ call got no answer within {timeout_s:.1f} s (is Redis stalled?); "
                "its outcome is unknown: check the server and retry"
            ) from None
        except concurrent.futures.CancelledError:
            raise EngineClosedError("the engine was closed during this call") from None

    def close(self, teardown: Callable[[], Awaitable[None]], *, timeout_s: float) -> None:
        """Run ``teardown`` on the loop, cancel what is left, stop the loop and join the thread.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._finish(teardown), self._loop).result(
                timeout=timeout_s
            )
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout_s)
            if not self._thread.is_alive():
                self._loop.close()

    async def _finish(self, teardown: Callable[[], Awaitable[None]]) -> None:
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            await teardown()
        finally:
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()
