"""PostgreSQL fixtures for the tests, on the private server of results/pgserver.py.

Fixtures: `pg_server` (one server for the session, stopped at the end even when tests fail),
`pg_url` (a fresh database on it for one test), `pg_server_factory` (more servers, each stopped
at the end of its test: for tests that stop a server on purpose). Without the server binaries
the `postgres` tests skip and say why.
"""

from __future__ import annotations

import pytest

from results.pgserver import BIN_ENV, FAST, ROLE, TempPostgres, find_bin, free_port

__all__ = ["BIN_ENV", "FAST", "ROLE", "TempPostgres", "find_bin", "free_port"]


def _start_or_skip(**kwargs) -> TempPostgres:
    try:
        return TempPostgres(**kwargs).start()
    except FileNotFoundError as e:
        pytest.skip(f"PostgreSQL tests need a server: {e}")


@pytest.fixture(scope="session")
def pg_server():
    server = _start_or_skip()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session server, as a URL with the role's password."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_server_factory():
    """Start more servers (each stopped and removed when the test ends)."""
    started: list[TempPostgres] = []

    def make(**kwargs) -> TempPostgres:
        started.append(_start_or_skip(**kwargs))
        return started[-1]

    try:
        yield make
    finally:
        for s in started:
            s.cleanup()
