"""Shared fixtures: every test gets its own real SQLite file and a client on it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbay_core import TbayClient

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite:///{tmp_path / 'tbay.db'}"


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
