"""An engine URL's own options survive its resolution to a server or a file."""

from __future__ import annotations

from pathlib import Path

from obsqueue.servers.resolve import resolve_engine, with_server_url


def test_the_engine_s_options_are_kept_beside_the_server_s_address() -> None:
    assert with_server_url("rq+redis://", "redis://127.0.0.1:6390/0") == (
        "rq+redis://127.0.0.1:6390/0"
    )
    assert with_server_url("postgresql://?lease_s=5", "postgresql://u@127.0.0.1:5999/db") == (
        "postgresql://u@127.0.0.1:5999/db?lease_s=5"
    )
    assert with_server_url("redis://?lease_s=5", "redis://h:1/0?ssl=false") == (
        "redis://h:1/0?ssl=false&lease_s=5"
    )


def test_a_file_engine_given_no_file_keeps_its_options(tmp_path: Path) -> None:
    resolved = resolve_engine("sqlite://?synchronous=OFF", file_dir=tmp_path)
    assert resolved.url == f"sqlite:///{(tmp_path / 'queue.db').resolve()}?synchronous=OFF"
    assert resolve_engine("sqlite://", file_dir=tmp_path).url.endswith("queue.db")
