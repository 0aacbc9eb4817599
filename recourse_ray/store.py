"""The results dataset: the only module that knows file layouts.

A sweep's results live under ``<results-root>/<sweep-name>/``::

    sweep.yaml                         the resolved spec as run
    rows/dataset=D/model=M/generator=G/seed=S/<system-key>.parquet
    manifest/<system-key>.json         commit marker, written last
    failures/<system-key>.json         last error of a failed system
    stale/                             manifests retired by a forced spec change (and the specs they ran)
    states/<system-key>.npz            optional final state (features, labels, weights)
    .staging/                          temporary files (never read as data)
    .lock                              held by the one writer (``ResultsStore.lock``)

Every file is first written under ``.staging/`` and then renamed into place, so a
reader never sees a partial file. A system counts as done only once its manifest
exists *and verifies*: the manifest is valid JSON, its ``rows_file`` lies inside the
directory, and the rows file has the size and SHA-256 the manifest recorded (a manifest
of an older version without them: a readable parquet footer with the recorded row
count). A system that does not verify counts as not committed: ``status`` lists it as
corrupt, ``resume`` reruns it, readers skip it with a warning. Readers take row files
from the manifests, so a row file whose manifest was never written (the driver died in
between) is ignored and overwritten on resume. The root may be a local path or any URI
pyarrow's filesystems understand (``s3://...``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recourse_ray._identity import IDENTITY_COLUMNS, identity_row

__all__ = [
    "IDENTITY_COLUMNS",
    "PARTITION_COLUMNS",
    "ROW_SCHEMA",
    "POLARS_SCHEMA",
    "SPEC_FILE",
    "ResultsStore",
    "NotAResultsDirectory",
    "StorageError",
    "LockHeld",
    "UnsafePath",
    "identity_row",
    "rows_to_table",
]

logger = logging.getLogger(__name__)

# The row schema, defined here once. Rows are long format: who the row belongs to (the
# identity columns, up to "seed"), then one measurement.
ROW_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("system_key", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("generator", pa.string()),
        ("seed", pa.int64()),
        ("round", pa.int64()),
        ("metric", pa.string()),
        ("scope", pa.string()),
        ("value", pa.float64()),
        ("p_value", pa.float64()),
    ]
)
# Defined in _identity (the workers' import, without pyarrow); the schema must start with them.
if tuple(ROW_SCHEMA.names[: ROW_SCHEMA.get_field_index("seed") + 1]) != IDENTITY_COLUMNS:
    raise ImportError("store.ROW_SCHEMA must start with _identity.IDENTITY_COLUMNS")
# The identity columns that name a row file's folder (rows/dataset=D/model=M/generator=G/seed=S/).
PARTITION_COLUMNS = ("dataset", "model", "generator", "seed")
# The same schema as polars types (pa.string() -> pl.String, ...), for frames built or read here.
POLARS_SCHEMA = dict(pl.from_arrow(ROW_SCHEMA.empty_table()).schema)

SPEC_FILE = "sweep.yaml"


class StorageError(OSError):
    """Writing to the results directory failed (disk full, permissions, unreachable storage)."""


class NotAResultsDirectory(ValueError):
    """Raised when a path does not hold a recourse_ray results dataset."""


class LockHeld(ValueError):
    """Another writer holds the results directory's lock."""


class UnsafePath(ValueError):
    """A path recorded in the results directory points outside it."""


# A lock on an object store is a file with a heartbeat (there is no flock there): a
# writer refreshes it every LOCK_HEARTBEAT_S; one not refreshed for LOCK_STALE_S belongs
# to a writer that died and may be taken over.
LOCK_FILE = ".lock"
LOCK_HEARTBEAT_S = 30.0
LOCK_STALE_S = 120.0
# The subfolders of the layout; each must be a folder when present.
LAYOUT_DIRS = ("rows", "manifest", "failures", "stale", "states", ".staging")


def safe_relpath(rel: object) -> str:
    """``rel`` normalised, when it is a relative path that stays inside the directory.

    Raises:
        UnsafePath: for an absolute path, a URI, a backslash, or a path that leaves the
            directory (``..``).
    """
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or "://" in rel:
        raise UnsafePath(f"the recorded path {rel!r} is not a relative path inside the results directory")
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise UnsafePath(f"the recorded path {rel!r} lies outside the results directory")
    return norm


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows_to_table(rows: Iterable[Mapping]) -> pa.Table:
    """Long-format metric rows (dicts with the ROW_SCHEMA keys) -> an Arrow table."""
    rows = list(rows)
    columns = {name: [r.get(name) for r in rows] for name in ROW_SCHEMA.names}
    return pa.table(columns, schema=ROW_SCHEMA)


def _partition_dir(identity: Mapping) -> str:
    def clean(v: object) -> str:
        return str(v).replace("/", "_").replace("=", "_")

    return "/".join(f"{k}={clean(identity[k])}" for k in PARTITION_COLUMNS)


class ResultsStore:
    """Read and write one sweep's results directory.

    Args:
        uri: local path or filesystem URI of the sweep's directory
            (``<results-root>/<sweep-name>``).
    """

    def __init__(self, uri: str | Path) -> None:
        uri = str(uri)
        if "://" in uri:
            try:
                self.fs, path = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowException, OSError, ValueError) as exc:
                scheme = uri.split("://", 1)[0]
                raise NotAResultsDirectory(
                    f"Cannot use the results location {uri!r}: {exc} (scheme {scheme!r}; use a local path or a "
                    "URI of a filesystem pyarrow supports, e.g. s3://bucket/prefix)."
                ) from None
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
        else:
            self.fs, path = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
            self.local = True
        self.uri = uri
        self.path = path.rstrip("/")

    @classmethod
    def for_sweep(cls, root: str | Path, sweep_name: str) -> ResultsStore:
        """The store of sweep ``sweep_name`` under a results root: ``<root>/<sweep_name>``.

        Args:
            root: the results root, a local path or a filesystem URI (``s3://bucket/prefix``).
            sweep_name: the sweep's name (its ``name`` in the sweep file).
        """
        root = str(root)
        if "://" in root:
            return cls(f"{root.rstrip('/')}/{sweep_name}")
        return cls(str(Path(root) / sweep_name))

    @property
    def sweep_name(self) -> str:
        """The sweep's name: the last part of the directory (the layout is ``<root>/<sweep-name>``)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def spec_uri(self) -> str:
        """Where the recorded spec lives, as the user named the directory (for messages)."""
        return f"{self.uri.rstrip('/')}/{SPEC_FILE}"

    # ------------------------------------------------------------------ helpers
    def _p(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def _write_atomic(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel``: staged under .staging, then renamed into place."""
        staging = self._p(".staging")
        tmp = f"{staging}/{uuid.uuid4().hex}.tmp"
        try:
            self.fs.create_dir(staging, recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            final = self._p(rel)
            self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
            self.fs.move(tmp, final)
        except OSError as exc:
            try:  # leave no partial file behind (it would be ignored anyway)
                if self._exists(tmp):
                    self.fs.delete_file(tmp)
            except OSError:
                pass
            raise StorageError(f"writing {rel} failed: {exc}") from exc

    def _read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._p(rel)) as f:
            return f.read()

    def _list(self, rel: str, suffix: str) -> list[str]:
        base = self._p(rel)
        kind = self._type(base)
        if kind == pafs.FileType.NotFound:
            return []
        if kind != pafs.FileType.Directory:
            raise NotAResultsDirectory(
                f"{self.uri!r} is not a usable recourse_ray results directory: {rel!r} in it is not a folder."
            )
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(
            info.base_name[: -len(suffix)]
            for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
        )

    # ------------------------------------------------------------------ layout
    def _type(self, path: str):
        try:
            return self.fs.get_file_info(path).type
        except OSError as exc:
            raise StorageError(f"cannot reach {self.uri!r}: {exc}") from exc

    def exists(self) -> bool:
        """Whether this directory holds a results dataset (its sweep.yaml exists)."""
        return self._type(self._p(SPEC_FILE)) != pafs.FileType.NotFound

    def check(self) -> None:
        """Raise NotAResultsDirectory unless this is a results dataset with a sound layout."""
        kind = self._type(self._p(SPEC_FILE))
        if kind == pafs.FileType.NotFound:
            raise NotAResultsDirectory(
                f"{self.uri!r} is not a recourse_ray results directory (it has no {SPEC_FILE}). "
                "Pass the directory of one sweep, e.g. results/quickstart."
            )
        if kind != pafs.FileType.File:
            raise NotAResultsDirectory(
                f"{self.uri!r} is not a usable recourse_ray results directory: its {SPEC_FILE} is not a file."
            )
        for sub in LAYOUT_DIRS:
            if self._type(self._p(sub)) not in (pafs.FileType.NotFound, pafs.FileType.Directory):
                raise NotAResultsDirectory(
                    f"{self.uri!r} is not a usable recourse_ray results directory: {sub!r} in it is not a folder."
                )

    def foreign_content(self) -> str | None:
        """Why this path cannot become a results dataset, or None.

        None when the directory does not exist, is empty, or already is a results dataset
        (whose spec the caller compares). A regular file, or a non-empty folder without a
        sweep.yaml (a user's own folder, named like the sweep), is never taken over.
        """
        kind = self._type(self.path)
        if kind == pafs.FileType.NotFound:
            return None
        if kind != pafs.FileType.Directory:
            return f"{self.uri!r} exists and is not a folder"
        if self.exists():
            return None
        try:
            entries = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        except OSError as exc:
            raise StorageError(f"cannot list {self.uri!r}: {exc}") from exc
        entries = [e for e in entries if e.base_name != LOCK_FILE]  # our own lock, taken just before
        if entries:
            names = ", ".join(sorted(e.base_name for e in entries)[:5])
            return (f"{self.uri!r} is a non-empty folder that is not a recourse_ray results directory "
                    f"(it holds {names}{', ...' if len(entries) > 5 else ''}); it is never taken over. "
                    "Choose another --results root, or rename the sweep")
        return None

    def init(self, spec_text: str) -> None:
        """Create the layout and record the resolved spec (only if not present)."""
        self.fs.create_dir(self.path, recursive=True)
        for sub in ("rows", "manifest", "failures"):
            self.fs.create_dir(self._p(sub), recursive=True)
        if not self.exists():
            self._write_atomic(SPEC_FILE, spec_text.encode("utf-8"))

    def save_retired_spec(self) -> str:
        """Copy the recorded spec under ``stale/`` (before a forced spec change); returns its path."""
        rel = f"stale/sweep-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.yaml"
        self._write_atomic(rel, self._read_bytes(SPEC_FILE))
        return rel

    def write_spec(self, spec_text: str) -> None:
        """Replace the recorded spec (used by ``resume --force``)."""
        self._write_atomic(SPEC_FILE, spec_text.encode("utf-8"))

    def read_spec(self) -> str:
        """The recorded spec's text; raises NotAResultsDirectory when there is none."""
        self.check()
        return self._read_bytes(SPEC_FILE).decode("utf-8")

    def clean_staging(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed.

        Call it only while holding :meth:`lock`: staged files belong to the one writer,
        and a writer that holds the lock is the only one alive.
        """
        staging = self._p(".staging")
        if self._type(staging) != pafs.FileType.Directory:
            return 0
        infos = self.fs.get_file_info(pafs.FileSelector(staging, recursive=False))
        for info in infos:
            if info.type == pafs.FileType.Directory:
                self.fs.delete_dir(info.path)
            else:
                self.fs.delete_file(info.path)
        return len(infos)

    # ------------------------------------------------------------------ lock
    def lock(self) -> "_Lock":
        """The writer's lock on this directory (a context manager).

        Local directories: an ``flock`` on ``.lock`` (released by the kernel when the
        process dies). Object stores: ``.lock`` holds the owner and a heartbeat refreshed
        by a thread; a lock not refreshed for ``LOCK_STALE_S`` seconds is taken over.

        Raises:
            LockHeld: another writer holds it (``__enter__``).
        """
        return _Lock(self)

    # ------------------------------------------------------------------ systems
    def _manifest_files(self) -> list[str]:
        return self._list("manifest", ".json")

    def verify_manifest(self, key: str) -> tuple[dict | None, str | None]:
        """(entry, None) for a manifest that verifies, (None, why) for one that does not."""
        try:
            entry = json.loads(self._read_bytes(f"manifest/{key}.json"))
        except (OSError, ValueError) as exc:
            return None, f"its manifest is unreadable ({type(exc).__name__})"
        if not isinstance(entry, dict):
            return None, "its manifest is not a JSON object"
        if entry.get("system_key") != key:
            return None, "its manifest names another system"
        try:
            rel = safe_relpath(entry.get("rows_file"))
        except UnsafePath as exc:
            return None, str(exc)
        if not rel.startswith("rows/") or not rel.endswith(".parquet"):
            return None, f"the recorded rows file {rel!r} is not under rows/"
        try:
            data = self._read_bytes(rel)
        except OSError:
            return None, f"its rows file {rel} is missing or unreadable"
        if "rows_sha256" in entry:
            if len(data) != entry.get("rows_bytes") or _sha256(data) != entry["rows_sha256"]:
                return None, f"its rows file {rel} does not match the manifest's size and checksum"
        else:  # written before checksums were recorded: the footer must parse and agree
            try:
                n_rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            except (pa.ArrowException, OSError, ValueError):
                return None, f"its rows file {rel} is not a readable parquet file"
            if n_rows != entry.get("n_rows"):
                return None, f"its rows file {rel} holds {n_rows} rows, the manifest says {entry.get('n_rows')}"
        entry["rows_file"] = rel
        return entry, None

    def verified(self) -> tuple[dict[str, dict], dict[str, str]]:
        """({key: manifest entry} of systems that verify, {key: why} of those that do not)."""
        good, corrupt = {}, {}
        for key in self._manifest_files():
            entry, why = self.verify_manifest(key)
            if entry is None:
                corrupt[key] = why
            else:
                good[key] = entry
        return good, corrupt

    def committed_keys(self) -> set[str]:
        """Keys of systems whose manifest exists and verifies (done)."""
        return set(self.verified()[0])

    def corrupt_keys(self) -> dict[str, str]:
        """{key: why} of systems whose manifest exists but does not verify (not done)."""
        return self.verified()[1]

    def failed_keys(self) -> set[str]:
        return set(self._list("failures", ".json"))

    def rows_relpath(self, identity: Mapping) -> str:
        return f"rows/{_partition_dir(identity)}/{identity['system_key']}.parquet"

    def write_system(self, identity: Mapping, table: pa.Table, manifest: Mapping) -> None:
        """Commit one finished system: rows file, then manifest (the commit marker).

        Args:
            identity: the system's identity columns (IDENTITY_COLUMNS).
            table: its rows (ROW_SCHEMA).
            manifest: JSON-serialisable details (settings, timings, versions, ...).
        """
        key = identity["system_key"]
        rel = self.rows_relpath(identity)
        buf = io.BytesIO()
        pq.write_table(table.cast(ROW_SCHEMA), buf, compression="zstd")
        data = buf.getvalue()
        self._write_atomic(rel, data)
        entry = {**manifest, **{k: identity[k] for k in IDENTITY_COLUMNS}, "rows_file": rel, "n_rows": table.num_rows,
                 "rows_bytes": len(data), "rows_sha256": _sha256(data)}
        self._write_atomic(f"manifest/{key}.json", json.dumps(entry, indent=1, default=str).encode("utf-8"))
        self.clear_failure(key)

    def retire_stale(self, keep: set[str]) -> list[str]:
        """Move manifests (and failures) of systems not in ``keep`` under ``stale/``.

        Used when a changed spec is forced onto an existing directory: rows of systems
        that are no longer part of the sweep stop counting, but nothing is deleted, and
        :meth:`restore_stale` brings them back when the spec that ran them returns.
        """
        moved = []
        for sub in ("manifest", "failures"):
            for key in self._list(sub, ".json"):
                if key not in keep:
                    self.retire(sub, key)
                    moved.append(key)
        return moved

    def retire(self, sub: str, key: str) -> None:
        """Move ``sub/<key>.json`` (``sub``: manifest or failures) to ``stale/sub/``."""
        self.fs.create_dir(self._p("stale", sub), recursive=True)
        self.fs.move(self._p(f"{sub}/{key}.json"), self._p(f"stale/{sub}/{key}.json"))

    def restore_stale(self, wanted: set[str], accept=None) -> list[str]:
        """Move retired manifests of systems in ``wanted`` back (the retirement is reversible).

        A retired manifest comes back only when its system is not committed now, its rows
        file still verifies, and ``accept(entry)`` (when given) is true.
        """
        restored = []
        present = set(self._manifest_files())
        for key in self._list("stale/manifest", ".json"):
            if key not in wanted or key in present:
                continue
            self.fs.move(self._p(f"stale/manifest/{key}.json"), self._p(f"manifest/{key}.json"))
            entry = self.verify_manifest(key)[0]
            if entry is None or (accept is not None and not accept(entry)):
                self.fs.move(self._p(f"manifest/{key}.json"), self._p(f"stale/manifest/{key}.json"))
            else:
                restored.append(key)
        return restored

    def write_failure(self, key: str, info: Mapping) -> None:
        self._write_atomic(f"failures/{key}.json", json.dumps(dict(info), indent=1, default=str).encode("utf-8"))

    def clear_failure(self, key: str) -> None:
        path = self._p(f"failures/{key}.json")
        if self._exists(path):
            self.fs.delete_file(path)

    def manifests(self) -> list[dict]:
        """All manifest entries of committed systems; systems that do not verify are skipped with a warning."""
        good, corrupt = self.verified()
        for key, why in sorted(corrupt.items()):
            logger.warning("Skipping system %s of %s: %s (it counts as not committed; `resume` reruns it).",
                           key, self.uri, why)
        return [good[k] for k in sorted(good)]

    def failures(self) -> dict[str, dict]:
        """Failure records by system key (an unreadable record reads as a failure saying so)."""
        out = {}
        for k in sorted(self.failed_keys()):
            try:
                record = json.loads(self._read_bytes(f"failures/{k}.json"))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                logger.warning("The failure record of system %s in %s is unreadable (%s).", k, self.uri,
                               type(exc).__name__)
                record = {"system_key": k, "error": f"(the failure record failures/{k}.json is unreadable)"}
            out[k] = record
        return out

    # ------------------------------------------------------------------ states
    def write_state(self, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self._write_atomic(f"states/{key}.npz", buf.getvalue())

    def state_keys(self) -> set[str]:
        return set(self._list("states", ".npz"))

    def read_state(self, key: str) -> dict[str, np.ndarray]:
        """One system's stored state (``write_state``)."""
        with np.load(io.BytesIO(self._read_bytes(f"states/{key}.npz"))) as z:
            return {k: z[k] for k in z.files}

    # ------------------------------------------------------------------ reading rows
    def row_files(self) -> list[str]:
        """Absolute paths of the row files of committed (verified) systems, each inside the directory."""
        return [self._p(m["rows_file"]) for m in self.manifests()]

    def scan_rows(self) -> pl.LazyFrame:
        """All committed rows as a polars LazyFrame with pinned column types."""
        files = self.row_files()
        if not files:
            return pl.LazyFrame(schema=POLARS_SCHEMA)
        if self.local:
            lf = pl.scan_parquet(files, hive_partitioning=False)
        else:
            import pyarrow.dataset as pads

            lf = pl.scan_pyarrow_dataset(pads.dataset(files, filesystem=self.fs, schema=ROW_SCHEMA, format="parquet"))
        return lf.select([pl.col(c).cast(t) for c, t in POLARS_SCHEMA.items()])

    def read_rows(self) -> pl.DataFrame:
        """All committed rows, read now (``scan_rows().collect()``)."""
        return self.scan_rows().collect()


def _owner_is_dead(owner: Mapping) -> bool:
    """Whether a lock's owner was a process on this host that no longer runs (its lock is stale at once).

    Owners on other hosts cannot be checked from here; their locks go stale by age.
    """
    if str(owner.get("host")) != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, KeyError, TypeError, OverflowError):
        return False
    return False


class _Lock:
    """The single-writer lock of a results directory (``ResultsStore.lock``)."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created: list[str] = []

    def _owner(self) -> bytes:
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "time": time.time()}).encode("utf-8")

    @staticmethod
    def _describe(raw: bytes) -> str:
        try:
            owner = json.loads(raw)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["time"])))
            return f"process {int(owner['pid'])} on {str(owner['host'])[:100]} (since {when})"
        except (ValueError, KeyError, TypeError):
            return "another process"

    def _held(self, raw: bytes) -> LockHeld:
        return LockHeld(
            f"The results directory {self.store.uri!r} is in use by another run ({self._describe(raw)}). "
            "Wait for it to finish; two writers would compute the same systems twice."
        )

    def __enter__(self) -> "_Lock":
        store = self.store
        # The folders this lock creates (the directory and any missing parents), innermost
        # first: a run that fails before writing anything removes them again.
        self._created = []
        path = store.path
        while path and store._type(path) == pafs.FileType.NotFound:
            self._created.append(path)
            parent = path.rsplit("/", 1)[0]
            if parent == path:
                break
            path = parent
        store.fs.create_dir(store.path, recursive=True)
        try:
            return self._acquire()
        except BaseException:
            self._remove_created()
            raise

    def _remove_created(self) -> None:
        """Remove the directory the lock created, when the run left it empty (a run that failed early)."""
        for path in self._created:
            try:
                if self.store.fs.get_file_info(pafs.FileSelector(path, recursive=False)):
                    return
                self.store.fs.delete_dir(path)
            except OSError:
                return

    def _acquire(self) -> "_Lock":
        store = self.store
        path = store._p(LOCK_FILE)
        if store.local:
            import fcntl

            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raw = os.pread(fd, 4096, 0)
                    os.close(fd)
                    raise self._held(raw) from None
                try:  # the file may have been unlinked by a writer releasing it: lock the one in place
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._owner(), 0)
            self._fd = fd
            return self
        if store._exists(path):
            raw = store._read_bytes(LOCK_FILE)
            try:
                owner = json.loads(raw)
                fresh = time.time() - float(owner["time"]) < LOCK_STALE_S and not _owner_is_dead(owner)
            except (ValueError, KeyError, TypeError):
                fresh = True
            if fresh:
                raise self._held(raw)
        self._write_remote()
        if json.loads(store._read_bytes(LOCK_FILE)).get("token") != self.token:  # lost a race
            raise self._held(store._read_bytes(LOCK_FILE))
        self._thread = threading.Thread(target=self._heartbeat, name="recourse-ray-lock", daemon=True)
        self._thread.start()
        return self

    def _write_remote(self) -> None:
        with self.store.fs.open_output_stream(self.store._p(LOCK_FILE)) as f:
            f.write(self._owner())

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            try:
                self._write_remote()
            except OSError as exc:  # the next beat tries again
                logger.warning("Could not refresh the lock of %s: %s", self.store.uri, exc)

    def __exit__(self, *exc_info) -> None:
        path = self.store._p(LOCK_FILE)
        if self._fd is not None:
            try:
                os.unlink(path)  # while still holding it: a waiting writer re-checks the inode
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            self._remove_created()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if json.loads(self.store._read_bytes(LOCK_FILE)).get("token") == self.token:
                self.store.fs.delete_file(path)
        except (OSError, ValueError):
            pass
        self._remove_created()
