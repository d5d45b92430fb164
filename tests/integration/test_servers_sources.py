"""Where a server comes from: the environment, a throwaway instance, testcontainers, or nowhere
(the engine is then *unavailable*, naming why each source could not serve). docs/servers.md."""

from __future__ import annotations

import pytest
import redis

from obsqueue.servers import (
    SOURCES,
    ServerUnavailableError,
    find_source,
    provision,
    resolve_engine,
    source_order,
)
from tests.conftest import throwaway
from tests.integration.helpers import docker_reason

pytestmark = pytest.mark.integration


def test_the_environment_comes_first_unless_the_run_kills_the_server() -> None:
    given = find_source("redis", env_url="redis://u:pw@elsewhere:6379/0")
    assert (given.name, given.detail) == ("env", "$OBSQUEUE_REDIS_URL")
    handle = given.start()
    assert not handle.owned and handle.url == "redis://u:pw@elsewhere:6379/0"
    with pytest.raises(ServerUnavailableError, match="kills the server, so it needs one"):
        find_source("redis", env_url="redis://elsewhere/0", owned=True, order=("env",))


def test_a_throwaway_server_comes_next_and_is_owned() -> None:
    source = throwaway(lambda: find_source("redis", owned=True, order=("throwaway",)), "redis")
    assert source.name == "throwaway" and source.detail.endswith("redis-server")
    with provision("redis", owned=True, order=("throwaway",)) as server:
        assert server.owned
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


def test_testcontainers_serves_exactly_where_a_docker_engine_answers() -> None:
    reason = docker_reason()
    if reason is None:
        source = find_source("postgres", order=("testcontainers",))
        assert source.name == "testcontainers" and "postgres:16-alpine on Docker" in source.detail
        return
    assert "no Docker engine answers" in reason or "testcontainers is not installed" in reason
    with pytest.raises(ServerUnavailableError) as info:
        find_source("postgres", order=("testcontainers",))
    assert str(info.value) == f"testcontainers: {reason}"


def test_with_no_source_left_the_engine_is_unavailable_naming_each_reason() -> None:
    env = {"OBSQUEUE_SERVER_SOURCES": "env,testcontainers"}
    with resolve_engine("rq+redis://", env=env) as resolved:
        if docker_reason() is None:
            pytest.skip("a Docker engine answers here, so testcontainers serves")
        assert resolved.server is None
        assert resolved.unavailable is not None
        assert resolved.unavailable.startswith("no redis server: env: $OBSQUEUE_REDIS_URL is not")
        assert "; testcontainers: " in resolved.unavailable


def test_the_source_order_is_read_from_the_environment() -> None:
    assert source_order({}) == SOURCES
    assert source_order({"OBSQUEUE_SERVER_SOURCES": " testcontainers , env "}) == (
        "testcontainers",
        "env",
    )
    with pytest.raises(ValueError, match="comma-separated subset of env, throwaway"):
        source_order({"OBSQUEUE_SERVER_SOURCES": "docker"})


def test_a_container_server_is_owned_and_comes_back_after_kill9_with_its_data() -> None:
    """Where Docker answers: the container's port is fixed, so kill -9 and start bring the same
    server back on the same URL, with what it had fsynced (appendfsync always)."""
    reason = docker_reason()
    if reason is not None:
        pytest.skip(f"unknown here: {reason}")
    with provision("redis", owned=True, order=("testcontainers",)) as server:
        assert server.owned and server.url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(server.url) as client:
            client.rpush("k", "kept")
        server.kill9()
        server.start()
        with redis.Redis.from_url(server.url) as client:
            assert client.lrange("k", 0, -1) == [b"kept"]
