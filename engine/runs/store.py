"""The run registry's store: SQLite in WAL mode under checkpoints/, the row API, and one folder per run.

Tables: `runs` (one row per run: config, status, timestamps, pid, heartbeat, device, code version,
dataset fingerprint, best epoch and scores) and `step_metrics` / `epoch_metrics` keyed by
(run, step) and (run, epoch) so that a resumed run replaces, never duplicates, what it redoes. One writer
per run (its trainer), many readers (dashboard, CLI). Statuses change only through `transition`, which
enforces the life of a run (engine.runs.states). Liveness: engine.runs.liveness; rebuilds: recovery.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from ..constants import default_checkpoints_dir
from .folder import RunDir
from .record import RunRecord
from .states import (DAMAGE_MESSAGES, RegistryDamaged, RegistryReadOnly, RegistryShadowed, RunError, RunStatus, check,
                     validate_name)

__all__ = ["Registry", "RUN_COLUMNS", "code_version"]
log = logging.getLogger(__name__)
ORPHANS = ".orphans"  # run folders found without a registry row, moved aside by create()
DB_NAME = "runs.sqlite"
DB_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's own files beside the database


def shadowing_folders(root: Path) -> list[Path]:
    """Folders standing where the registry or SQLite's files beside it belong (they make it unopenable)."""
    return [p for p in (root / (DB_NAME + s) for s in ("", *DB_SIDE_FILES)) if p.is_dir()]

def code_version() -> str:
    """`git describe` of the code that creates a run ("unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    preset TEXT,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    heartbeat REAL,
    device TEXT,
    code_version TEXT,
    data_fingerprint TEXT,
    error TEXT,
    epochs_done INTEGER DEFAULT 0,
    step INTEGER DEFAULT 0,
    best_epoch INTEGER,
    best_val_auc REAL,
    test_auc REAL,
    progress TEXT,
    depends_on TEXT,
    placement TEXT
);
CREATE TABLE IF NOT EXISTS step_metrics (
    run TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, lr REAL, time REAL,
    PRIMARY KEY (run, step)
);
CREATE TABLE IF NOT EXISTS epoch_metrics (
    run TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, val_loss REAL, lr REAL,
    val_auc_mean REAL, val_auc TEXT, seconds REAL, skipped_images INTEGER, time REAL,
    PRIMARY KEY (run, epoch)
);
"""


def _read_only_why(root: Path, db: Path) -> str | None:
    """Why nothing can be written under root (None when it can): a read-only file system or no permission."""
    if not root.is_dir():
        return None
    for path in (root, db):
        if path.exists() and not os.access(path, os.W_OK):
            try:
                ro = os.statvfs(path).f_flag & os.ST_RDONLY
            except OSError:
                ro = False
            return "a read-only file system" if ro else f"no permission to write {path}"
    return None


_SCHEMA_SEEN: set[tuple] = set()  # registry files (path, device, inode) whose tables this process has checked


def _file_id(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None  # no file yet: always create the tables
    return str(path), st.st_dev, st.st_ino


class Registry:
    """Access to checkpoints/runs.sqlite and the run folders beside it.

    A folder that cannot be written (an archive mounted read-only, another user's runs) opens read-only:
    every read works, every write raises RegistryReadOnly with the reason."""

    def __init__(self, root=None):
        self.root = Path(root) if root else default_checkpoints_dir()
        self.db_path = self.root / DB_NAME
        self.read_only = _read_only_why(self.root, self.db_path)
        if self.read_only:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create the checkpoints folder {self.root}: {exc.strerror or exc}") from exc
        if _file_id(self.db_path) not in _SCHEMA_SEEN:  # once per file and process: pages open a Registry per run
            self.ensure_schema()
            _SCHEMA_SEEN.add(_file_id(self.db_path))

    def ensure_schema(self) -> None:
        """Create the tables if missing (a new registry, or one deleted under a running trainer)."""
        with self._connect() as con:
            con.executescript(SCHEMA)
            columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            for col in {"depends_on", "placement"} - columns:  # added later: a parent to wait for, a Ray placement
                con.execute(f"ALTER TABLE runs ADD COLUMN {col} TEXT")

    @contextmanager
    def _connect(self):
        try:
            if self.read_only:  # immutable: the folder cannot change under us, and SQLite needs no -shm file
                con = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?immutable=1", uri=True, timeout=30.0,
                                      isolation_level=None)
            else:
                con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            self._raise_damage(exc)
        con.row_factory = sqlite3.Row
        try:
            if not self.read_only:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA busy_timeout=30000")
            yield con
        except sqlite3.DatabaseError as exc:
            if any(m in str(exc) for m in DAMAGE_MESSAGES) or "unable to open" in str(exc):
                self._raise_damage(exc)
            raise
        finally:
            con.close()

    def _raise_damage(self, exc: Exception):
        shadows = shadowing_folders(self.root)
        if shadows:
            raise RegistryShadowed(self.db_path, shadows) from exc
        raise RegistryDamaged(self.db_path, exc) from exc

    def _readable(self) -> bool:
        """False for a read-only folder without a registry file: it simply holds no runs."""
        return not self.read_only or self.db_path.is_file()

    def require_writable(self) -> None:
        """RegistryReadOnly with the reason, before anything is written under a read-only folder."""
        if self.read_only:
            raise RegistryReadOnly(self.root, self.read_only)

    def _transaction(self, body):
        """Run body(connection) in one IMMEDIATE transaction, retrying while another writer holds the lock."""
        self.require_writable()
        for attempt in range(20):
            try:
                with self._connect() as con:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        result = body(con)
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    con.execute("COMMIT")
                    return result
            except sqlite3.OperationalError as exc:
                if "readonly" in str(exc):
                    raise RegistryReadOnly(self.root, str(exc)) from exc
                if "disk is full" in str(exc):
                    raise RunError(f"No space left on device while writing the registry {self.db_path}") from exc
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise RunError(f"registry {self.db_path} stayed locked; try again")

    def _write(self, sql: str, args=()) -> int:
        """Run one statement in a transaction; the number of rows it changed."""
        return self._transaction(lambda con: con.execute(sql, args).rowcount)

    # -- folders -------------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        validate_name(name)
        path = (self.root / name).resolve()
        if path.parent != self.root.resolve():
            raise RunError(f"run name {name!r} escapes {self.root}")
        return path

    # -- rows ----------------------------------------------------------------------------------
    def create(self, name: str, config: dict, preset: str | None, status: str = RunStatus.QUEUED, *, adopt: bool = False,
               **fields) -> RunRecord:
        """A new run row (queued, or running when its submitter trains it at once) and its folder.
        adopt=True (only `rebuild_registry`) keeps a folder that exists already as this run's."""
        validate_name(name)
        check(name, None, status)
        self.require_writable()
        bad = [k for k in fields if k not in RUN_COLUMNS or k == "status"]
        if bad:
            raise RunError(f"unknown run field(s) {bad}")
        if self.get(name) is not None:
            raise RunError(f"a run named {name!r} already exists; choose another --name or --resume it")
        folder = self.run_dir(name)
        if folder.exists() and any(folder.iterdir()) and not adopt:
            # a folder the registry does not know (a deleted registry, a copied folder): never adopted
            # as this run's state; kept, moved aside, and said in the log
            aside = self.root / ORPHANS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(aside)
            log.warning("run folder %s was not in the registry: moved to %s", folder, aside)
        cols = ["name", "preset", "config", "status", "created", "code_version", *fields]
        vals = [name, preset, json.dumps(config, sort_keys=True), status, time.time(), code_version(), *_values(fields)]
        self._write(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
        try:  # the folder only once the row is in: a refused or failed insert leaves no folder behind
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._write("DELETE FROM runs WHERE name = ?", (name,))
            raise RunError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from exc
        return self.get(name)

    def unique_name(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]", "-", base)[:48].strip("-.") or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{base}-{stamp}"
        k = 1
        while self.get(name) is not None or (self.root / name).exists():
            k += 1
            name = f"{base}-{stamp}-{k}"
        return name

    def update(self, name: str, **fields) -> None:
        """Set fields of a run's row; its status changes only through `transition`."""
        if not fields:
            return
        bad = [k for k in fields if k not in RUN_COLUMNS or k == "status"]
        if bad:
            raise RunError(f"unknown run field(s) {bad}" + (": use transition() for the status" if "status" in bad else ""))
        sets = ", ".join(f"{k}=?" for k in fields)
        if not self._write(f"UPDATE runs SET {sets} WHERE name=?", (*_values(fields), name)):
            raise RunError(f"no run named {name!r} in {self.db_path}")

    def transition(self, name: str, *path: str, only_from: tuple[str, ...] | None = None, **fields) -> bool:
        """Move a run through `path` (e.g. queued, then running) in one transaction, every change
        checked against the life of a run, and set `fields` with it. With `only_from`, a run found
        in another state is left alone and False returned (a race lost, not an error)."""
        bad = [k for k in fields if k not in RUN_COLUMNS or k == "status"]
        if bad or not path:
            raise RunError(f"unknown run field(s) {bad}" if bad else "transition needs a target status")

        def body(con):
            row = con.execute("SELECT status FROM runs WHERE name=?", (name,)).fetchone()
            if row is None:
                raise RunError(f"no run named {name!r}")
            if only_from is not None and row[0] not in only_from:
                return False
            old = row[0]
            for new in path:
                check(name, old, new)
                old = new
            sets = ", ".join(["status=?", *(f"{k}=?" for k in fields)])
            con.execute(f"UPDATE runs SET {sets} WHERE name=?", (path[-1], *_values(fields), name))
            return True
        return self._transaction(body)

    def claim_next(self, capacity: int) -> str | None:
        """Atomically claim the oldest queued run that can start (no parent, or a parent that has
        succeeded) if fewer than `capacity` runs are running.

        The count and the claim happen in one IMMEDIATE transaction, so concurrent schedulers
        (ten browser sessions submitting at once, a trainer finishing) never exceed capacity."""
        def body(con):
            busy = con.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]
            if busy >= capacity:
                return None
            row = con.execute(
                "SELECT name FROM runs r WHERE status='queued' AND (depends_on IS NULL OR EXISTS "
                "(SELECT 1 FROM runs p WHERE p.name = r.depends_on AND p.status = 'succeeded')) "
                "ORDER BY created, name LIMIT 1").fetchone()
            if row is None:
                return None
            check(row[0], RunStatus.QUEUED, "running")
            con.execute("UPDATE runs SET status='running', pid=NULL, heartbeat=?, error=NULL WHERE name=?",
                        (time.time(), row[0]))
            return row[0]
        return self._transaction(body)

    def get(self, name: str) -> RunRecord | None:
        if not self._readable():
            return None
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE name=?", (name,)).fetchone()
        return RunRecord.from_row(row) if row else None

    def require(self, name: str) -> RunRecord:
        """The run's row; RunError naming the run when there is none."""
        row = self.get(name)
        if row is None:
            raise RunError(f"no run named {name!r} (see `python -m engine runs list`)")
        return row

    def folder(self, name: str) -> RunDir:
        """The owner of the run's files (checkpoints/<name>)."""
        return RunDir(self.run_dir(name))

    def list(self) -> list[RunRecord]:
        if not self._readable():
            return []
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [RunRecord.from_row(r) for r in rows]

    def delete(self, name: str) -> None:
        for table in ("step_metrics", "epoch_metrics"):
            self._write(f"DELETE FROM {table} WHERE run=?", (name,))
        self._write("DELETE FROM runs WHERE name=?", (name,))

    # -- metrics -------------------------------------------------------------------------------
    def log_steps(self, name: str, rows: list[tuple[int, int, float, float]]) -> None:
        """rows: (step, epoch, train_loss, lr)."""
        if not rows:
            return
        now = time.time()
        self._transaction(lambda con: con.executemany("INSERT OR REPLACE INTO step_metrics VALUES (?,?,?,?,?,?)",
                                                      [(name, s, e, l, lr, now) for s, e, l, lr in rows]))

    def log_epoch(self, name: str, epoch: int, *, train_loss, val_loss, lr, val_auc_mean, val_auc: dict,
                  seconds: float, skipped_images: int) -> None:
        self._write("INSERT OR REPLACE INTO epoch_metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (name, epoch, train_loss, val_loss, lr, val_auc_mean, json.dumps(val_auc), seconds,
                     skipped_images, time.time()))

    def truncate_after(self, name: str, epoch: int, step: int) -> None:
        """Forget metrics past a checkpoint (epoch count done, global step) before resuming from it."""
        self._write("DELETE FROM step_metrics WHERE run=? AND step>?", (name, step))
        self._write("DELETE FROM epoch_metrics WHERE run=? AND epoch>?", (name, epoch))

    def steps(self, name: str) -> list[dict]:
        if not self._readable():
            return []
        with self._connect() as con:
            return [dict(r) for r in con.execute(
                "SELECT step, epoch, train_loss, lr, time FROM step_metrics WHERE run=? ORDER BY step", (name,))]

    def epochs(self, name: str) -> list[dict]:
        if not self._readable():
            return []
        with self._connect() as con:
            rows = [dict(r) for r in con.execute("SELECT * FROM epoch_metrics WHERE run=? ORDER BY epoch", (name,))]
        for r in rows:
            r.pop("run", None)
            r["val_auc"] = json.loads(r["val_auc"]) if r["val_auc"] else {}
        return rows

    def integrity_ok(self) -> bool:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


RUN_COLUMNS = ("preset", "config", "status", "started", "finished", "pid", "heartbeat", "device", "code_version",
               "data_fingerprint", "error", "epochs_done", "step", "best_epoch", "best_val_auc", "test_auc",
               "progress", "depends_on", "placement")


def _values(fields: dict) -> list:
    return [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in fields.values()]


