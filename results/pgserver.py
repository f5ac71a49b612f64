"""A private PostgreSQL server, for benchmarks (`python -m results.upload_bench`) and tests.

`TempPostgres` runs initdb in a temporary directory and starts the server on a free local port
(127.0.0.1 only). Clients connect over TCP as a role with a password (scram-sha-256), so checks
that a password never reaches the output use a real one; administration (creating a database)
goes through the server's Unix socket as the `postgres` superuser, trusted locally only.
initdb and pg_ctl refuse to run as root, so as root they run as the `postgres` user. The
server binaries are found on PATH, in Debian's /usr/lib/postgresql/*/bin or in
$COLOSSUS_BENCH_PG_BIN.

    server = TempPostgres(durable=True).start()
    url = server.url(server.create_database("bench"))
    ...
    server.cleanup()  # stops it and removes its files (also at exit)
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

ROLE = "bench"
BIN_ENV = "COLOSSUS_BENCH_PG_BIN"  # folder holding initdb and pg_ctl, to override the search

# Throw-away settings (the default): durability off is fast, and a killed test leaves nothing
# worth keeping. The upload benchmark passes durable=True so its figures include fsync costs.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_bin() -> Path | None:
    """The folder with initdb and pg_ctl: $COLOSSUS_BENCH_PG_BIN, PATH, or Debian's layout."""
    candidates = [os.environ.get(BIN_ENV)]
    on_path = shutil.which("pg_ctl")
    candidates.append(os.path.dirname(on_path) if on_path else None)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)  # newest first
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """One throw-away PostgreSQL cluster. `start()`, `url(db)`, `create_database()`, `stop()`."""

    def __init__(self, bindir: Path | None = None, *, durable: bool = False):
        self.bindir = bindir or find_bin()
        if self.bindir is None:
            raise FileNotFoundError(f"no PostgreSQL server binaries (initdb, pg_ctl) on PATH, in "
                                    f"/usr/lib/postgresql/*/bin or ${BIN_ENV}")
        self.settings = {} if durable else dict(FAST)
        self.password = secrets.token_urlsafe(18)  # unique text: tests grep output for it
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="colossus-pg-"))
        self.data = self.root / "data"
        self.running = False
        self._as_postgres = os.geteuid() == 0  # initdb/pg_ctl refuse root
        if self._as_postgres:
            shutil.chown(self.root, user="postgres")
        atexit.register(self.cleanup)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()}\n{log}")

    def start(self) -> TempPostgres:
        fresh = not self.data.exists()
        if fresh:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-N", "-E", "UTF8",
                      "--auth-local=trust", "--auth-host=scram-sha-256")
        opts = [f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1"]
        opts += [f"-c {k}={v}" for k, v in self.settings.items()]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-o", " ".join(opts), "start")
        self.running = True
        if fresh:  # a restarted server keeps its role
            self.admin(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def restart(self) -> None:
        """Stop (fast: open sessions are cut) and start again, on the same port and data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        """Run SQL as the superuser over the Unix socket (autocommit: CREATE DATABASE needs it)."""
        with psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """A client URL over TCP as the password role (without the password: libpq looks in
        $PGPASSWORD and ~/.pgpass)."""
        auth = f"{ROLE}:{self.password}" if password else ROLE
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
