"""The results dataset: the only module that knows file layouts.

A sweep's results live under ``<results-root>/<sweep-name>/``::

    sweep.yaml                         the resolved spec as run
    rows/dataset=D/model=M/generator=G/seed=S/<system-key>.parquet
    manifest/<system-key>.json         commit marker, written last
    failures/<system-key>.json         last error of a failed system
    stale/                             manifests retired by a forced spec change
    states/<system-key>.npz            optional final state (features, labels, weights)
    .staging/                          temporary files (never read as data)

Every file is first written under ``.staging/`` and then renamed into place, so a
reader never sees a partial file. A system counts as done only once its manifest
exists; readers take row files from the manifests, so a row file whose manifest was
never written (the driver died in between) is ignored and overwritten on resume. The
root may be a local path or any URI pyarrow's filesystems understand (``s3://...``).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "IDENTITY_COLUMNS",
    "PARTITION_COLUMNS",
    "ROW_SCHEMA",
    "POLARS_SCHEMA",
    "SPEC_FILE",
    "ResultsStore",
    "NotAResultsDirectory",
    "StorageError",
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
IDENTITY_COLUMNS = tuple(ROW_SCHEMA.names[: ROW_SCHEMA.get_field_index("seed") + 1])
# The identity columns that name a row file's folder (rows/dataset=D/model=M/generator=G/seed=S/).
PARTITION_COLUMNS = ("dataset", "model", "generator", "seed")
# The same schema as polars types (pa.string() -> pl.String, ...), for frames built or read here.
POLARS_SCHEMA = dict(pl.from_arrow(ROW_SCHEMA.empty_table()).schema)

SPEC_FILE = "sweep.yaml"


class StorageError(OSError):
    """Writing to the results directory failed (disk full, permissions, unreachable storage)."""


class NotAResultsDirectory(ValueError):
    """Raised when a path does not hold a recourse_ray results dataset."""


def identity_row(*, sweep: str, system_key: str, dataset: str, model: str, generator: str, seed: int) -> dict:
    """The identity columns of one system's rows, in ``IDENTITY_COLUMNS`` order.

    Every row of a system starts with these values; ``write_system`` takes them as the
    system's identity.
    """
    return {"sweep": sweep, "system_key": system_key, "dataset": dataset, "model": model,
            "generator": generator, "seed": int(seed)}


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
            self.fs, path = pafs.FileSystem.from_uri(uri)
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
        if not self._exists(base):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        return sorted(
            info.base_name[: -len(suffix)]
            for info in infos
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
        )

    # ------------------------------------------------------------------ layout
    def exists(self) -> bool:
        """Whether this directory holds a results dataset (its sweep.yaml exists)."""
        return self._exists(self._p(SPEC_FILE))

    def check(self) -> None:
        """Raise NotAResultsDirectory unless this is a results dataset."""
        if not self.exists():
            raise NotAResultsDirectory(
                f"{self.uri!r} is not a recourse_ray results directory (it has no {SPEC_FILE}). "
                "Pass the directory of one sweep, e.g. results/quickstart."
            )

    def init(self, spec_text: str) -> None:
        """Create the layout and record the resolved spec (only if not present)."""
        self.fs.create_dir(self.path, recursive=True)
        for sub in ("rows", "manifest", "failures"):
            self.fs.create_dir(self._p(sub), recursive=True)
        if not self.exists():
            self._write_atomic(SPEC_FILE, spec_text.encode("utf-8"))

    def write_spec(self, spec_text: str) -> None:
        """Replace the recorded spec (used by ``resume --force``)."""
        self._write_atomic(SPEC_FILE, spec_text.encode("utf-8"))

    def read_spec(self) -> str:
        """The recorded spec's text; raises NotAResultsDirectory when there is none."""
        self.check()
        return self._read_bytes(SPEC_FILE).decode("utf-8")

    def clean_staging(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        staging = self._p(".staging")
        if not self._exists(staging):
            return 0
        infos = self.fs.get_file_info(pafs.FileSelector(staging, recursive=False))
        for info in infos:
            self.fs.delete_file(info.path)
        return len(infos)

    # ------------------------------------------------------------------ systems
    def committed_keys(self) -> set[str]:
        """Keys of systems whose manifest exists (done)."""
        return set(self._list("manifest", ".json"))

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
        self._write_atomic(rel, buf.getvalue())
        entry = {**manifest, **{k: identity[k] for k in IDENTITY_COLUMNS}, "rows_file": rel, "n_rows": table.num_rows}
        self._write_atomic(f"manifest/{key}.json", json.dumps(entry, indent=1, default=str).encode("utf-8"))
        self.clear_failure(key)

    def retire_stale(self, keep: set[str]) -> list[str]:
        """Move manifests (and failures) of systems not in ``keep`` under ``stale/``.

        Used when a changed spec is forced onto an existing directory: rows of systems
        that are no longer part of the sweep stop counting, but nothing is deleted.
        """
        moved = []
        for sub in ("manifest", "failures"):
            for key in self._list(sub, ".json"):
                if key not in keep:
                    self.fs.create_dir(self._p("stale", sub), recursive=True)
                    self.fs.move(self._p(f"{sub}/{key}.json"), self._p(f"stale/{sub}/{key}.json"))
                    moved.append(key)
        return moved

    def write_failure(self, key: str, info: Mapping) -> None:
        self._write_atomic(f"failures/{key}.json", json.dumps(dict(info), indent=1, default=str).encode("utf-8"))

    def clear_failure(self, key: str) -> None:
        path = self._p(f"failures/{key}.json")
        if self._exists(path):
            self.fs.delete_file(path)

    def manifests(self) -> list[dict]:
        """All manifest entries (one per committed system)."""
        return [json.loads(self._read_bytes(f"manifest/{k}.json")) for k in sorted(self.committed_keys())]

    def failures(self) -> dict[str, dict]:
        """Failure records by system key."""
        return {k: json.loads(self._read_bytes(f"failures/{k}.json")) for k in sorted(self.failed_keys())}

    # ------------------------------------------------------------------ states
    def write_state(self, key: str, arrays: Mapping[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self._write_atomic(f"states/{key}.npz", buf.getvalue())

    def state_keys(self) -> set[str]:
        return set(self._list("states", ".npz"))

    def read_state(self, key: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self._read_bytes(f"states/{key}.npz"))) as z:
            return {k: z[k] for k in z.files}

    # ------------------------------------------------------------------ reading rows
    def row_files(self) -> list[str]:
        """Absolute paths of the row files of committed systems."""
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
