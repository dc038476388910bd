"""A throwaway PostgreSQL server for the tests, started from the server binaries on this machine.

``initdb`` refuses to run as root, so when the tests run as root (CI does) the
server runs as the ``postgres`` system user through ``runuser``. The data
directory lives in a fresh temp dir with fsync off: it is thrown away. TCP
connections need the password (scram-sha-256), so a wrong one is really refused.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid


def find_binaries() -> str | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL server in a temp dir: start, stop (fast), start again, remove."""

    password = "tbay-test-secret"

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.port = _free_port()
        self.root = tempfile.mkdtemp(prefix="tbay-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.logfile = os.path.join(self.root, "server.log")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.makedirs(self.data, mode=0o700)
            os.chown(self.data, user.pw_uid, user.pw_gid)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(self.password + "\n")
        os.chmod(pwfile, 0o644)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")

    def _run(self, binary: str, *args: str) -> None:
        command = [*self.as_user, os.path.join(self.bindir, binary), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
        )
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.logfile, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def fresh_url(self) -> str:
        """A URL whose ``tbay_`` tables live in a new schema of their own (one per test)."""
        return f"{self.base_url}?schema=t_{uuid.uuid4().hex[:12]}"
