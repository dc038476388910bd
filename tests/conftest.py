"""Shared fixtures: every test gets its own real database and a client on it.

``db_url`` (and so ``client`` and ``subprocess_env``) is parametrised over both
stores, SQLite and PostgreSQL, so every behaviour test is one contract the two
stores must both pass. The PostgreSQL server is real: the tests start one from
the server binaries (``initdb``/``pg_ctl``) into a temp dir, once per session,
and give each test a schema of its own. Without the binaries the PostgreSQL
cases are skipped with the install hint, except under CI (``CI`` set), where a
missing server is a failure. Tests that only make sense on SQLite use
``sqlite_url``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PgServer, find_binaries

from tbay_core import TbayClient

REPO_ROOT = Path(__file__).resolve().parent.parent
STORES = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the whole session."""
    bindir = find_binaries()
    if bindir is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
            "(Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) to run "
            "the PostgreSQL half of the contract suite"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " — CI must not skip them")
        pytest.skip(message)
    server = PgServer(bindir)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite:///{tmp_path / 'tbay.db'}"


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh schema on the session's PostgreSQL server."""
    return pg_server.fresh_url()


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database for this test, on each store in turn."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def client(db_url: str) -> Iterator[TbayClient]:
    """A client on this test's database, closed afterwards."""
    with TbayClient(db_url) as tbay:
        yield tbay


@pytest.fixture
def subprocess_env(db_url: str) -> dict[str, str]:
    """Environment for child processes (CLI, workers): the repo importable, the test's database."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TBAY_DB_URL"] = db_url
    env.pop("TBAY_POLICY_FILE", None)
    return env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests, for child processes."""
    return sys.executable
