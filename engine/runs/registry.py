"""The run registry: SQLite in WAL mode under checkpoints/, plus one folder per run.

Tables: `runs` (one row per run: config, status, timestamps, pid, heartbeat, device, code version,
dataset fingerprint, best epoch and scores) and `step_metrics` / `epoch_metrics` keyed by
(run, step) and (run, epoch) so that a resumed run replaces, never duplicates, what it redoes.
One writer per run (its trainer), many readers (dashboard, CLI). Statuses change only through
`transition`, which enforces the life of a run (engine.runs.states).
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
from .states import FINAL, STATUSES, RunError, check

__all__ = ["FINAL", "STATUSES", "Registry", "RunError", "pid_alive", "validate_name"]
log = logging.getLogger(__name__)
ORPHANS = ".orphans"  # run folders found without a registry row, moved aside by create()
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DB_NAME = "runs.sqlite"
HEARTBEAT_STALE_S = 120.0
STARTING_GRACE_S = 60.0

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
    depends_on TEXT
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


def code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise RunError(f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit (no '/' or '..')")
    return name


DAMAGE_MESSAGES = ("not a database", "malformed", "file is encrypted", "disk I/O error", "no such table")


class RegistryDamaged(RunError):
    """runs.sqlite cannot be read: names the file and the way back (`runs rebuild`)."""

    def __init__(self, path, exc):
        self.path = path
        super().__init__(f"the run registry {path} is damaged ({exc}). The run folders beside it are intact: "
                         "`python -m engine runs rebuild` moves the damaged file aside and rebuilds the registry "
                         "from them")


class RegistryReadOnly(RunError):
    """The checkpoints folder cannot be written: runs can be browsed, not started or changed."""

    def __init__(self, root, why: str):
        super().__init__(f"the checkpoints folder {root} is read-only ({why}): its runs can be browsed, but not "
                         "started, resumed, cancelled, deleted or evaluated into it. Make it writable, or point "
                         "$CXR_CHECKPOINTS (the sidebar's checkpoints folder) at a writable one")


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
            if "depends_on" not in columns:  # a registry written before runs could wait for a parent
                con.execute("ALTER TABLE runs ADD COLUMN depends_on TEXT")

    @contextmanager
    def _connect(self):
        try:
            if self.read_only:  # immutable: the folder cannot change under us, and SQLite needs no -shm file
                con = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?immutable=1", uri=True, timeout=30.0,
                                      isolation_level=None)
            else:
                con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise RegistryDamaged(self.db_path, exc) from exc
        con.row_factory = sqlite3.Row
        try:
            if not self.read_only:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA busy_timeout=30000")
            yield con
        except sqlite3.DatabaseError as exc:
            if any(m in str(exc) for m in DAMAGE_MESSAGES):
                raise RegistryDamaged(self.db_path, exc) from exc
            raise
        finally:
            con.close()

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
    def create(self, name: str, config: dict, preset: str | None, status: str = "queued", *, adopt: bool = False,
               **fields) -> dict:
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
        folder.mkdir(parents=True, exist_ok=True)
        cols = ["name", "preset", "config", "status", "created", "code_version", *fields]
        vals = [name, preset, json.dumps(config, sort_keys=True), status, time.time(), code_version(), *_values(fields)]
        self._write(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
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

    def restore_row(self, row: dict) -> bool:
        """Write back a run's row that vanished with the registry file (deleted or replaced under its
        running trainer): the tables if they are gone, then the row as the trainer knows it. True if
        the row was missing."""
        self.ensure_schema()
        if self.get(row["name"]) is not None:
            return False
        keep = {k: row[k] for k in RUN_COLUMNS if k not in ("config", "status") and row.get(k) is not None}
        preset = keep.pop("preset", None)
        keep.pop("code_version", None)
        try:
            self.create(row["name"], row["config"], preset, status=row.get("status") or "running", adopt=True, **keep)
        except RunError:
            if self.get(row["name"]) is None:  # not a lost race with another restorer
                raise
        return True

    def unlisted_folders(self) -> list[str]:
        """Run folders with a checkpoint that the registry has no row for (a deleted or replaced
        runs.sqlite): `rebuild_registry(missing_only=True)` restores them."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return []
        known = {r["name"] for r in self.list()}
        return sorted(p.name for p in folders if p.name not in known and NAME_RE.match(p.name)
                      and RunDir(p).has_checkpoint())

    def transition(self, name: str, *path: str, only_from: tuple[str, ...] | None = None, **fields) -> bool:
        """Move a run through `path` (e.g. "queued", "running") in one transaction, every change
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
            check(row[0], "queued", "running")
            con.execute("UPDATE runs SET status='running', pid=NULL, heartbeat=?, error=NULL WHERE name=?",
                        (time.time(), row[0]))
            return row[0]
        return self._transaction(body)

    def get(self, name: str) -> dict | None:
        if not self._readable():
            return None
        with self._connect() as con:
            row = con.execute("SELECT * FROM runs WHERE name=?", (name,)).fetchone()
        return _row(row) if row else None

    def require(self, name: str) -> dict:
        """The run's row; RunError naming the run when there is none."""
        row = self.get(name)
        if row is None:
            raise RunError(f"no run named {name!r} (see `python -m engine runs list`)")
        return row

    def folder(self, name: str) -> RunDir:
        """The owner of the run's files (checkpoints/<name>)."""
        return RunDir(self.run_dir(name))

    def list(self) -> list[dict]:
        if not self._readable():
            return []
        with self._connect() as con:
            rows = con.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
        return [_row(r) for r in rows]

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

    # -- liveness ------------------------------------------------------------------------------
    def mark_stale(self, stale_after: float = HEARTBEAT_STALE_S) -> list[str]:
        """Runs marked running whose process is gone or whose heartbeat is old become interrupted, or
        take the end their trainer wrote in outcome.json when it could not write the registry."""
        if self.read_only:
            return []
        changed = []
        now = time.time()
        for r in self.list():
            if r["status"] != "running":
                continue
            if not r["pid"] and now - (r["heartbeat"] or 0) < STARTING_GRACE_S:
                continue  # claimed by the scheduler, process starting
            alive = pid_alive(r["pid"])
            beat = r["heartbeat"] or r["started"] or r["created"]
            if not alive or now - beat > stale_after:
                if not alive and self._apply_outcome(r):
                    changed.append(r["name"])
                    continue
                why = r["error"] or ("trainer process vanished" if not alive else "heartbeat stopped")
                if self.transition(r["name"], "interrupted", only_from=("running",), pid=None, error=why):
                    changed.append(r["name"])
        return changed

    def _apply_outcome(self, row: dict) -> bool:
        """A dead trainer's own account of its end (outcome.json of this start of the run), if any."""
        try:
            out = self.folder(row["name"]).read_outcome()
        except RunError:
            return False
        started = out.get("started")
        if out.get("status") not in FINAL + ("interrupted",) or started is None or row["started"] is None \
                or abs(float(started) - float(row["started"])) > 1e-3:
            return False
        fields = {k: out.get(k) for k in ("finished", "error", "test_auc") if out.get(k) is not None}
        return self.transition(row["name"], out["status"], only_from=("running",), pid=None, progress=None, **fields)

    def integrity_ok(self) -> bool:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


RUN_COLUMNS = ("preset", "config", "status", "started", "finished", "pid", "heartbeat", "device", "code_version",
               "data_fingerprint", "error", "epochs_done", "step", "best_epoch", "best_val_auc", "test_auc", "progress",
               "depends_on")


def _values(fields: dict) -> list:
    return [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in fields.values()]


def _row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"]) if d.get("config") else {}
    d["progress"] = json.loads(d["progress"]) if d.get("progress") else None
    return d


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def rebuild_registry(root=None, missing_only: bool = False) -> dict:
    """Registry rows from the run folders. By default the damaged (or missing) runs.sqlite is moved
    aside and every folder with a checkpoint becomes a run again; with missing_only, a readable
    registry is kept and only the folders it has no row for are added (`Registry.unlisted_folders`).

    A restored run has the config, epoch, best epoch and AUCs its checkpoint and metrics.json record,
    and the status its trainer wrote in outcome.json; without one, `succeeded` when it has test
    metrics, else `interrupted` (resumable). Per-step and per-epoch curves were only in the old file
    and are not recovered."""
    root = Path(root) if root else default_checkpoints_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    if missing_only:
        reg = Registry(root)
        names = reg.unlisted_folders()
    else:
        for suffix in ("", "-wal", "-shm"):
            p = root / (DB_NAME + suffix)
            if p.exists():
                p.rename(p.with_name(f"{DB_NAME}.damaged-{stamp}{suffix}"))
                moved.append(p.name)
        reg = Registry(root)
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    restored, skipped = [], {}
    for name in names:
        try:
            restored.append(_restore_folder(reg, name))
        except Exception as exc:  # a folder without a readable checkpoint is left as it is, and said
            skipped[name] = str(exc).splitlines()[0][:200]
    return {"registry": str(reg.db_path), "moved_aside": moved, "restored": restored, "skipped": skipped}


def _restore_folder(reg: Registry, name: str) -> dict:
    from ..models.checkpoint import load_checkpoint
    from .details import headline

    validate_name(name)
    d = RunDir(reg.root / name)
    ckpt = load_checkpoint(d.last if d.last.is_file() else d.best_checkpoint())
    metrics = d.read_metrics()
    test = {r["class"]: r.get("auc") for r in metrics.get("test", {}).get("auc", [])}
    outcome = d.read_outcome()
    status = outcome.get("status") if outcome.get("status") in FINAL + ("interrupted",) else None
    status = status or ("succeeded" if test else "interrupted")
    cfg = ckpt.get("config", {})
    reg.create(name, cfg, None, status="running", adopt=True)
    reg.update(name, epochs_done=int(ckpt.get("epoch") or 0), step=int(ckpt.get("step") or 0),
               best_epoch=ckpt.get("best_epoch"), test_auc=headline(cfg, test)[1] if test else None,
               best_val_auc=ckpt.get("best_val_auc") if (ckpt.get("best_val_auc") or -1) >= 0 else None)
    error = outcome.get("error") if status != "succeeded" else None
    if status != "succeeded" and not error:
        error = "rebuilt from its folder: resume to continue"
    reg.transition(name, status, pid=None, finished=outcome.get("finished"), error=error)
    return {"run": name, "status": status, "epochs_done": int(ckpt.get("epoch") or 0)}
