"""The latency lookup-table store: one SQLite file (``lut.sqlite``) for many devices and runtimes.

Tables: ``devices`` (name, hardware description, fingerprint), ``runtimes`` (name, provider, threads,
precision, batch), ``entries`` (one layer's latency statistics per device and runtime, when it was measured,
with which runtime version, protocol and load average), ``recipes`` (a name for each architecture spec a
table was built for; specs are identified by a hash of their JSON, so layers and calibrations follow the
architecture, not its label), ``calibrations`` (whole-subnet measurements per device, runtime and spec) and
``corrections`` (the calibration fitted from them). The schema is
versioned. Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with a busy timeout, so several
processes can fill one table at once without losing rows, and a killed build keeps all committed rows.
Tables are shared as JSON (:meth:`LatencyTable.export_json`, :meth:`LatencyTable.import_json`) and merged
(newest measurement wins; :mod:`profilers.table_share`); rows are checked by :mod:`profilers.table_rows`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
import urllib.parse
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from elastic.families import spec_from_dict
from profilers.correction import Correction
from profilers.record import DeviceInfo, Measurement
from profilers.table_rows import (STATS, CalibrationSample, Entry, MergeReport, RuntimeKey, _check_measurement, _json,
                                  _number, _runtime_key, check_name, check_subnet, spec_id)
from profilers.table_share import _CAL_COLS, _ENTRY_MARKS, SCHEMA_VERSION, TableSharing

__all__ = ["DEFAULT_TABLE", "SCHEMA_VERSION", "STATS", "CalibrationSample", "Entry", "LatencyTable", "MergeReport",
           "RuntimeKey", "check_name", "read_only", "spec_id"]

DEFAULT_TABLE = "lut.sqlite"


def read_only(path: str | Path) -> bool:
    """Whether ``path`` is an existing table file that cannot be written here (the file or its folder is not
    writable): :class:`LatencyTable` opens it read-only by default."""
    path = Path(path)
    return path.is_file() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, info TEXT NOT NULL,
    fingerprint TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runtimes (id INTEGER PRIMARY KEY, name TEXT NOT NULL, provider TEXT NOT NULL,
    threads INTEGER NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
    UNIQUE (name, provider, threads, precision, batch));
CREATE TABLE IF NOT EXISTS entries (device_id INTEGER NOT NULL REFERENCES devices(id),
    runtime_id INTEGER NOT NULL REFERENCES runtimes(id), key TEXT NOT NULL,
    {stats}, measured_at REAL NOT NULL,
    runtime_version TEXT NOT NULL, fingerprint TEXT NOT NULL, protocol TEXT NOT NULL, load_avg REAL NOT NULL,
    PRIMARY KEY (device_id, runtime_id, key));
CREATE TABLE IF NOT EXISTS recipes (name TEXT PRIMARY KEY, spec_id TEXT NOT NULL, spec TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS calibrations (device_id INTEGER NOT NULL REFERENCES devices(id),
    runtime_id INTEGER NOT NULL REFERENCES runtimes(id), spec_id TEXT NOT NULL, subnet TEXT NOT NULL,
    measured_ms REAL NOT NULL, measured_at REAL NOT NULL, runtime_version TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '', protocol TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, runtime_id, spec_id, subnet));
CREATE TABLE IF NOT EXISTS corrections (device_id INTEGER NOT NULL REFERENCES devices(id),
    runtime_id INTEGER NOT NULL REFERENCES runtimes(id), spec_id TEXT NOT NULL, model TEXT NOT NULL,
    fitted_at REAL NOT NULL, PRIMARY KEY (device_id, runtime_id, spec_id));
CREATE TABLE IF NOT EXISTS drift_checks (device_id INTEGER NOT NULL REFERENCES devices(id),
    runtime_id INTEGER NOT NULL REFERENCES runtimes(id), spec_id TEXT NOT NULL, ratio REAL NOT NULL,
    detail TEXT NOT NULL, measured_at REAL NOT NULL, PRIMARY KEY (device_id, runtime_id, spec_id, measured_at));
""".format(stats=", ".join(f"{s} {'INTEGER' if s == 'runs' else 'REAL'} NOT NULL" for s in STATS))



class LatencyTable(TableSharing):
    """A SQLite latency table; use as a context manager or call :meth:`close`.

    Args:
        path: The SQLite file (created when missing, unless read-only).
        timeout: Seconds a writer waits for another writer's transaction.
        readonly: Open for reading only: the file must exist, its rows are never modified and no file is
            left beside it (a read-only file or folder is opened this way by default); any write is then a
            ``ValueError``.
    """

    def __init__(self, path: str | Path = DEFAULT_TABLE, timeout: float = 60.0, readonly: bool | None = None):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < 86400:
            raise ValueError(f"timeout={timeout!r} must be a number of seconds from 0 to 86400")
        self.path = Path(path)
        try:
            if self.path.is_dir():
                raise ValueError(f"table path {self.path} is a directory; give a .sqlite file")
            if readonly is None:
                readonly = read_only(self.path)
            self.readonly = readonly
            if readonly:
                self._db = self._open_readonly(timeout)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:  # a name too long, an unwritable or looping path ...
            why = getattr(exc, "strerror", None) or exc
            raise ValueError(f"cannot open latency table {self.path}: {why}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            with self._write() as db:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                cols = {r[1] for r in db.execute("PRAGMA table_info(calibrations)")}
                for col in ("fingerprint", "protocol"):  # tables written before these were recorded
                    if col not in cols:
                        db.execute(f"ALTER TABLE calibrations ADD COLUMN {col} TEXT NOT NULL DEFAULT ''")
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif str(row[0]) != str(SCHEMA_VERSION):
                    raise ValueError(f"{self.path} has table schema version {row[0]}; this ofa-kit reads version "
                                     f"{SCHEMA_VERSION} only")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{self.path} is not a latency table (SQLite): {exc}") from None
        except ValueError:
            self._db.close()
            raise

    def _open_readonly(self, timeout: float) -> sqlite3.Connection:
        """A connection that reads and leaves no file behind. A table writable here gets an ordinary connection
        that refuses writes (SQLite removes the -wal/-shm files it makes when its last connection closes; one
        opened ``mode=ro`` cannot, and left them). A table nobody here can write is opened ``immutable``
        (nothing is made beside it), unless a write-ahead log beside it holds rows not yet in the file: those
        are read ``mode=ro``, as the log's owner left them."""
        if not self.path.is_file():
            raise ValueError(f"latency table {self.path} does not exist; build one with `ofakit profile build`")
        wal, logged = self.path.with_name(self.path.name + "-wal"), False
        if not read_only(self.path):
            db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only = ON")
        else:
            logged = wal.is_file() and wal.stat().st_size > 0  # an empty log (or none) holds no rows
            uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
            db = sqlite3.connect(uri + ("?mode=ro" if logged else "?mode=ro&immutable=1"), uri=True, timeout=timeout,
                                 isolation_level=None, check_same_thread=False)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            db.close()
            if logged and "no such table" not in str(exc):  # e.g. no -shm beside the log, and none can be made
                raise ValueError(f"{self.path} cannot be read here ({exc}): its write-ahead log {wal.name} holds rows "
                                 "not yet in the file; open the table once where it is writable (that merges the "
                                 f"log) or copy it with {wal.name} somewhere writable") from None
            raise ValueError(f"{self.path} is not a latency table (SQLite): {exc}") from None
        if row is None or str(row[0]) != str(SCHEMA_VERSION):
            db.close()
            raise ValueError(f"{self.path} has table schema version {row and row[0]}; this ofa-kit reads "
                             f"version {SCHEMA_VERSION} only")
        return db

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> "LatencyTable":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise ValueError(f"latency table {self.path} is open read-only (the file or its folder is not "
                             "writable): this step must write to it; copy the table or fix its permissions")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ ids
    def _device_id(self, db: sqlite3.Connection, name: str, info: DeviceInfo | None, create: bool) -> int | None:
        row = db.execute("SELECT id FROM devices WHERE name = ?", (name,)).fetchone()
        if info is not None:
            payload = (json.dumps(info.to_dict()), info.fingerprint, time.time(), name)
            if row is None:
                db.execute("INSERT INTO devices (info, fingerprint, updated_at, name) VALUES (?, ?, ?, ?)", payload)
            else:
                db.execute("UPDATE devices SET info = ?, fingerprint = ?, updated_at = ? WHERE name = ?", payload)
            row = db.execute("SELECT id FROM devices WHERE name = ?", (name,)).fetchone()
        elif row is None and create:
            raise ValueError(f"device {name!r} is not in {self.path}")
        return None if row is None else int(row[0])

    def _runtime_id(self, db: sqlite3.Connection, rk: RuntimeKey, create: bool) -> int | None:
        vals = tuple(asdict(rk).values())
        where = "name = ? AND provider = ? AND threads = ? AND precision = ? AND batch = ?"
        row = db.execute(f"SELECT id FROM runtimes WHERE {where}", vals).fetchone()
        if row is None and create:
            db.execute("INSERT INTO runtimes (name, provider, threads, precision, batch) VALUES (?, ?, ?, ?, ?)", vals)
            row = db.execute(f"SELECT id FROM runtimes WHERE {where}", vals).fetchone()
        return None if row is None else int(row[0])

    # --------------------------------------------------------------- writes
    def put_many(self, device: str, items: Sequence[tuple[str, Measurement]]) -> None:
        """Store layer measurements (one transaction); a key measured again is replaced."""
        if not items:
            return
        check_name(device, "device name")
        for key, m in items:
            if not isinstance(key, str) or not key:
                raise ValueError(f"layer key {key!r} must be a non-empty string")
            _check_measurement(m, f"layer {key!r} of {device}", self.path)
        with self._write() as db:
            dev = self._device_id(db, device, items[0][1].device, True)
            rows = []
            for key, m in items:
                rt = self._runtime_id(db, RuntimeKey.of(m), True)
                s = m.stats
                rows.append((dev, rt, key, *(getattr(s, f) for f in STATS), m.measured_at, m.runtime_version,
                             m.device.fingerprint, json.dumps(m.protocol.to_dict(), sort_keys=True), m.load_avg))
            db.executemany(f"INSERT OR REPLACE INTO entries VALUES ({_ENTRY_MARKS})", rows)

    def put(self, device: str, key: str, m: Measurement) -> None:
        """Store one layer measurement."""
        self.put_many(device, [(key, m)])

    def put_recipe(self, name: str, spec: Mapping[str, Any]) -> str:
        """Name the architecture spec (``MobileNetV3Spec.to_dict()``) a table is built for; returns its id.

        A name already bound to another spec is an error (pick another name); so is an empty name, one with
        control characters (a newline) or surrounding spaces, or one longer than 200 characters.
        """
        check_name(name, "recipe name")
        try:
            json.dumps(spec, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"spec of recipe {name!r} is not plain JSON ({exc}); allowed: MobileNetV3Spec.to_dict()"
                             ) from None
        if not isinstance(spec, Mapping):
            raise ValueError(f"spec of recipe {name!r} is {spec!r}; allowed: a dict (MobileNetV3Spec.to_dict())")
        try:
            spec_from_dict(spec)
        except ValueError as exc:
            raise ValueError(f"spec of recipe {name!r}: {exc}") from None
        sid = spec_id(spec)
        with self._write() as db:
            row = db.execute("SELECT spec_id FROM recipes WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != sid:
                raise ValueError(f"recipe name {name!r} in {self.path} belongs to another architecture "
                                 f"(spec {row[0]}, not {sid}); choose another name")
            db.execute("INSERT OR REPLACE INTO recipes VALUES (?, ?, ?, ?)", (name, sid, json.dumps(spec), time.time()))
        return sid

    def add_calibration(self, device: str, sid: str, subnet_json: str, m: Measurement) -> None:
        """Store a whole-subnet measurement of a subnet of spec ``sid`` (replacing an older one)."""
        row = self._db.execute("SELECT spec FROM recipes WHERE spec_id = ?", (sid,)).fetchone()
        space = spec_from_dict(_json(row[0], f"the spec {sid}", self.path)).space if row else None
        check_subnet(subnet_json, space, "calibration subnet (SubnetConfig.to_json())", self.path, "nothing stored")
        _check_measurement(m, f"calibration subnet of {device}", self.path)
        with self._write() as db:
            dev = self._device_id(db, device, m.device, True)
            rt = self._runtime_id(db, RuntimeKey.of(m), True)
            db.execute(f"INSERT OR REPLACE INTO calibrations ({_CAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (dev, rt, sid, subnet_json, m.stats.median_ms, m.measured_at, m.runtime_version,
                        m.device.fingerprint, json.dumps(m.protocol.to_dict(), sort_keys=True)))

    def put_correction(self, device: str, runtime: RuntimeKey, sid: str, model: Mapping[str, Any]) -> None:
        """Store the fitted latency correction of a device, runtime configuration and spec."""
        try:
            Correction.from_dict(model)
        except ValueError as exc:
            raise ValueError(f"{exc}; nothing stored") from None
        with self._write() as db:
            dev = self._device_id(db, device, None, True)
            rt = self._runtime_id(db, runtime, True)
            db.execute("INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?)",
                       (dev, rt, sid, json.dumps(dict(model), sort_keys=True), time.time()))

    # ---------------------------------------------------------------- reads
    def add_drift(self, device: str, runtime: RuntimeKey, sid: str, ratio: float, detail: Mapping[str, Any],
                  measured_at: float) -> None:
        """Record a drift check: reference subnets re-timed now ran ``ratio`` times their stored latency."""
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < math.inf:
            raise ValueError(f"drift ratio={ratio!r} must be a positive finite number")
        _number(measured_at, "a drift check has measured_at", self.path, "nothing stored")
        try:
            text = json.dumps(dict(detail), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"drift check detail must be plain JSON ({exc}); nothing stored") from None
        with self._write() as db:
            dev = self._device_id(db, device, None, True)
            rt = self._runtime_id(db, runtime, True)
            db.execute("INSERT OR REPLACE INTO drift_checks VALUES (?, ?, ?, ?, ?, ?)",
                       (dev, rt, sid, float(ratio), text, measured_at))

    def drift(self, device: str, runtime: RuntimeKey, sid: str) -> list[dict[str, Any]]:
        """Drift checks of a device, runtime configuration and spec, oldest first (local observations: they
        are not exported with the table)."""
        rows = self._db.execute(
            "SELECT x.ratio, x.detail, x.measured_at FROM drift_checks x JOIN devices d ON d.id = x.device_id "
            "JOIN runtimes r ON r.id = x.runtime_id WHERE d.name = ? AND r.name = ? AND r.provider = ? AND "
            "r.threads = ? AND r.precision = ? AND r.batch = ? AND x.spec_id = ? ORDER BY x.measured_at",
            (device, *asdict(runtime).values(), sid)).fetchall()
        out = []
        for ratio, detail, at in rows:
            info = _json(detail, "a drift check", self.path)
            if not isinstance(info, dict):
                raise ValueError(f"{self.path}: a drift check's detail is {str(info)[:60]!r}, not an object: the table "
                                 "is corrupt; rebuild it or import a good copy")
            out.append({"ratio": _number(ratio, "a drift check has ratio", self.path), **info,
                        "measured_at": _number(at, "a drift check has measured_at", self.path)})
        return out

    def devices(self) -> dict[str, DeviceInfo]:
        """Devices in the table with their hardware description."""
        rows = self._db.execute("SELECT name, info FROM devices ORDER BY name").fetchall()
        out = {}
        for n, i in rows:
            info = _json(i, f"the description of device {n!r}", self.path)
            try:
                out[n] = DeviceInfo.from_dict(info)
            except (TypeError, AttributeError, ValueError) as exc:
                raise ValueError(f"{self.path}: the description of device {n!r} is corrupt ({exc}); rebuild the "
                                 "table or import a good copy") from None
        return out

    def runtimes(self) -> list[RuntimeKey]:
        """Runtime configurations in the table."""
        rows = self._db.execute("SELECT name, provider, threads, precision, batch FROM runtimes ORDER BY 1, 2, 3")
        return [_runtime_key(r, self.path) for r in rows.fetchall()]

    def recipe(self, name: str) -> dict[str, Any]:
        """The spec dict recorded for ``name``."""
        row = self._db.execute("SELECT spec FROM recipes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ValueError(f"recipe {name!r} has no table in {self.path}; tables exist for: {self.recipes()}")
        return _json(row[0], f"the spec of recipe {name!r}", self.path)

    def recipes(self) -> list[str]:
        """Recipes with a recorded spec."""
        return [r[0] for r in self._db.execute("SELECT name FROM recipes ORDER BY name")]

    def recipe_name(self, name: str, spec: Mapping[str, Any]) -> str:
        """The name to record ``spec`` under here: ``name`` when it is one of the names ``spec`` already has,
        else the first of those; a new architecture gets ``name``, or ``name@SPECID`` when ``name`` belongs to
        another architecture here (never an error, never a silently dropped name)."""
        sid = spec_id(spec)
        names = self.recipes()
        same = [n for n, (s,) in zip(names, (self._db.execute("SELECT spec_id FROM recipes WHERE name = ?", (n,))
                                               .fetchone() for n in names)) if s == sid]
        if same:
            return name if name in same else same[0]
        return name if name not in names else f"{name}@{sid[:8]}"

    def entries(self, device: str | None = None, runtime: RuntimeKey | None = None,
                keys: Iterable[str] | None = None) -> list[Entry]:
        """Stored entries, optionally only those of one device, runtime configuration and set of keys."""
        sql = ("SELECT d.name, r.name, r.provider, r.threads, r.precision, r.batch, e.key, e.median_ms, e.p10_ms, "
               "e.p90_ms, e.mean_ms, e.std_ms, e.min_ms, e.runs, e.measured_at, e.runtime_version, e.fingerprint, "
               "e.protocol, e.load_avg FROM entries e JOIN devices d ON d.id = e.device_id "
               "JOIN runtimes r ON r.id = e.runtime_id WHERE 1 = 1")
        args: list[Any] = []
        if device is not None:
            sql += " AND d.name = ?"
            args.append(device)
        if runtime is not None:
            sql += " AND r.name = ? AND r.provider = ? AND r.threads = ? AND r.precision = ? AND r.batch = ?"
            args += list(asdict(runtime).values())
        rows = self._db.execute(sql + " ORDER BY d.name, r.id, e.key", args).fetchall()
        for r in rows:
            for i, col in enumerate(STATS + ("measured_at",), start=7):
                _number(r[i], f"entry {r[6]!r} of {r[0]} has {col}", self.path)
            _number(r[-1], f"entry {r[6]!r} of {r[0]} has load_avg", self.path)
        out = [Entry(r[0], _runtime_key(r[1:6], self.path), *r[6:]) for r in rows]
        if keys is not None:
            wanted = set(keys)
            out = [e for e in out if e.key in wanted]
        return out

    def correction(self, device: str, runtime: RuntimeKey, sid: str) -> Correction | None:
        """The stored correction of a device, runtime configuration and spec (``None`` when not fitted); a
        corrupt or hand-edited one is a one-line error naming the table."""
        row = self._db.execute(
            "SELECT c.model FROM corrections c JOIN devices d ON d.id = c.device_id JOIN runtimes r ON "
            "r.id = c.runtime_id WHERE d.name = ? AND r.name = ? AND r.provider = ? AND r.threads = ? AND "
            "r.precision = ? AND r.batch = ? AND c.spec_id = ?", (device, *asdict(runtime).values(), sid)).fetchone()
        if row is None:
            return None
        stored = _json(row[0], f"the correction of {device}", self.path)
        try:
            return Correction.from_dict(stored)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None

    def _cal_extra(self, prefix: str) -> str:
        """The calibration columns added later, as a SELECT suffix ("" on an old table opened read-only)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(calibrations)")}
        return f", {prefix}fingerprint, {prefix}protocol" if "protocol" in cols else ""

    def calibration(self, device: str, runtime: RuntimeKey, sid: str) -> list[CalibrationSample]:
        """Whole-subnet measurements stored for a device, runtime configuration and spec id."""
        rows = self._db.execute(
            f"SELECT c.subnet, c.measured_ms, c.measured_at, c.runtime_version{self._cal_extra('c.')} FROM calibrations c "
            "JOIN devices d ON d.id = c.device_id JOIN runtimes r ON r.id = c.runtime_id WHERE d.name = ? "
            "AND r.name = ? AND r.provider = ? AND r.threads = ? AND r.precision = ? AND r.batch = ? "
            "AND c.spec_id = ? ORDER BY c.measured_at", (device, *asdict(runtime).values(), sid)).fetchall()
        for r in rows:
            _number(r[1], f"calibration subnet of {device} has measured_ms", self.path)
            _number(r[2], f"calibration subnet of {device} has measured_at", self.path)
        return [CalibrationSample(*r) for r in rows]

    def stale(self, device: str, runtime: RuntimeKey, keys: Iterable[str], max_age_s: float | None = None,
              runtime_version: str | None = None, fingerprint: str | None = None) -> list[str]:
        """Keys that must be (re-)measured: missing, older than ``max_age_s``, measured with another runtime
        version or on other hardware (another device fingerprint)."""
        have = {e.key: e for e in self.entries(device, runtime)}
        now, out = time.time(), []
        for k in keys:
            e = have.get(k)
            if (e is None or (max_age_s is not None and now - e.measured_at > max_age_s)
                    or (runtime_version is not None and e.runtime_version != runtime_version)
                    or (fingerprint is not None and e.fingerprint != fingerprint)):
                out.append(k)
        return out

