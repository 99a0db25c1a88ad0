"""Sharing latency tables: the whole table as JSON, and merging an export (or another table) into this one.

:class:`TableSharing` is mixed into :class:`profilers.store.LatencyTable`; a merge is one transaction in
which every incoming row is checked like a stored one before anything is written, devices are told apart by
fingerprint (never by name alone) and the newest measurement of a layer or calibration subnet wins.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from elastic.families import spec_from_dict
from elastic.fileio import atomic_write_text
from profilers.record import DeviceInfo
from profilers.table_rows import (STATS, MergeReport, RuntimeKey, _count, _imported_runtime, _not_future, _number,
                                  check_name, check_subnet, spec_id)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_ENTRY_KEYS = frozenset({"device", "runtime", "key", *STATS, "runs", "measured_at", "runtime_version", "fingerprint",
                         "protocol", "load_avg"})
_CAL_KEYS = frozenset({"device", "runtime", "spec_id", "subnet", "measured_ms", "measured_at", "runtime_version",
                       "fingerprint", "protocol"})


def _known_keys(record: Any, allowed: frozenset[str], what: str, src: Path) -> None:
    """A record of an export holds only the fields the format has (an unknown one is an error, never dropped)."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{what} in {src} is {str(record)[:60]!r}, not an object (nothing imported)")
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ValueError(f"{what} in {src} has unknown field(s) {unknown[:5]}; allowed: {sorted(allowed)} "
                         "(nothing imported)")


_ENTRY_MARKS = ", ".join("?" * (3 + len(STATS) + 5))  # ids + key, stats, measured_at .. load_avg
_CAL_COLS = "device_id, runtime_id, spec_id, subnet, measured_ms, measured_at, runtime_version, fingerprint, protocol"


class TableSharing:
    """JSON export and merge for :class:`profilers.store.LatencyTable` (which provides the connection,
    ``_write``, ``_device_id``, ``_runtime_id`` and the reads used here)."""

    def to_json(self) -> dict[str, Any]:
        """The whole table as a JSON-ready dict."""
        devices = {n: i.to_dict() for n, i in self.devices().items()}
        entries = [{**asdict(e), "runtime": asdict(e.runtime)} for e in self.entries()]
        cal = []
        for (dev, rt, rec, sub, ms, at, ver, *fp_proto) in self._db.execute(
                "SELECT d.name, r.name || '\x1f' || r.provider || '\x1f' || r.threads || '\x1f' || r.precision "
                "|| '\x1f' || r.batch, c.spec_id, c.subnet, c.measured_ms, c.measured_at, c.runtime_version"
                f"{self._cal_extra('c.')} FROM calibrations c JOIN devices d ON d.id = c.device_id "
                "JOIN runtimes r ON r.id = c.runtime_id"):
            n, p, t, pr, b = rt.split("\x1f")
            fp, proto = fp_proto or ("", "")
            cal.append({"device": dev, "runtime": asdict(RuntimeKey(n, p, int(t), pr, int(b))), "spec_id": rec,
                        "subnet": sub, "measured_ms": ms, "measured_at": at, "runtime_version": ver,
                        "fingerprint": fp, "protocol": proto})
        recipes = {n: self.recipe(n) for n in self.recipes()}
        return {"format": "ofakit-latency-table", "schema_version": SCHEMA_VERSION, "devices": devices,
                "recipes": recipes, "entries": entries, "calibrations": cal}

    def export_json(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")
        return Path(path)

    def import_json(self, path_or_data: str | Path | Mapping[str, Any],
                    rename: Mapping[str, str] | None = None) -> MergeReport:
        """Merge a JSON export (or another ``.sqlite`` table) into this one; newer measurements win.

        Devices are told apart by fingerprint, never by name alone: an incoming device whose name is taken
        here by another machine (every machine calls itself ``local``) is stored as ``NAME@FINGERPRINT``
        unless ``rename`` maps it (``{"local": "lab-pc"}``); an import never overwrites another device's
        measurements.
        """
        data = path_or_data
        if not isinstance(data, (Mapping, str, os.PathLike)):
            raise ValueError(f"import {str(data)[:80]!r}: allowed: a JSON export's path, a .sqlite table's path or "
                             "the export's dict")
        if not isinstance(data, Mapping):
            p = Path(data)
            if p.suffix in (".sqlite", ".db"):
                if not p.is_file():
                    raise ValueError(f"latency table {p} does not exist (or is not a file); nothing to import")
                with type(self)(p, readonly=True) as other:  # type: ignore[call-arg]
                    data = other.to_json()
            else:
                try:
                    data = json.loads(p.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                    raise ValueError(f"cannot read latency table JSON {p}: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"not an ofa-kit latency table export: a JSON {type(data).__name__}, not an object")
        if data.get("format") != "ofakit-latency-table" or data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"not an ofa-kit latency table export (schema {SCHEMA_VERSION}): "
                             f"format={data.get('format')!r}, schema_version={data.get('schema_version')!r}")
        for key, kind in (("devices", Mapping), ("recipes", Mapping), ("entries", list), ("calibrations", list)):
            if key in data and not isinstance(data[key], kind):
                raise ValueError(f"malformed latency table export: {key!r} is a {type(data[key]).__name__}; allowed: "
                                 f"{'an object' if kind is Mapping else 'a list'} (nothing imported)")
        try:
            names = self._import_names(data, dict(rename or {}))
            src = Path("<dict>") if isinstance(path_or_data, Mapping) else Path(path_or_data)
            recipe_names, imported = self._recipe_names(data)
            report = MergeReport(self._merge(data, names, recipe_names, imported, src),
                                 {k: v for k, v in names.items() if k != v},
                                 {k: v for k, v in recipe_names.items() if k != v})
            self._refit_imported(data, names, src)
            return report
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed latency table export: {type(exc).__name__} {exc}") from None

    def _refit_imported(self, data: Mapping[str, Any], names: Mapping[str, str], src: Path) -> None:
        """Refit the correction of every device, runtime and architecture the import brought calibration
        subnets for (an export holds the samples, not the fit: without this, an imported device's predictions
        would be raw layer sums). Left to `profile build` where the layers it needs are not all here yet."""
        from profilers.builder import refit  # the builder imports the store, which this class is part of

        recipes = {spec_id(self.recipe(n)): n for n in self.recipes()}
        for device, runtime, sid in dict.fromkeys((names[c["device"]], _imported_runtime(c["runtime"], src),
                                                   c["spec_id"]) for c in data.get("calibrations", [])):
            if sid not in recipes:  # its architecture is stored here under no name: nothing to fit it for
                continue
            try:
                refit(self, recipes[sid], device, runtime)
            except ValueError as exc:
                log.warning("imported calibration of %s on %s/%s not fitted: %s", recipes[sid], device,
                            runtime.label(), exc)

    def _import_names(self, data: Mapping[str, Any], rename: dict[str, str]) -> dict[str, str]:
        """Incoming device name -> the name it gets here (see :meth:`import_json`)."""
        for new in rename.values():
            check_name(new, "--as device name")
        unknown = sorted(set(rename) - set(data["devices"]))
        if unknown:
            raise ValueError(f"--as names device(s) {unknown} that the import does not hold; it holds "
                             f"{sorted(data['devices'])}")
        mine, names = self.devices(), {}
        for name, info in data["devices"].items():
            incoming = DeviceInfo.from_dict(info)
            target = check_name(rename.get(name, name), "imported device name")
            if target in mine and mine[target].fingerprint != incoming.fingerprint:
                if name in rename:
                    raise ValueError(f"--as {name}={target}: {target!r} is another machine in {self.path} "
                                     f"(fingerprint {mine[target].fingerprint}); choose a new name")
                target = f"{name}@{incoming.fingerprint[:8]}"
                log.warning("device %r of the import is another machine than %r here: stored as %r", name, name,
                            target)
            names[name] = target
        return names

    def _recipe_names(self, data: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """Incoming recipe name -> the name its architecture gets here (:meth:`LatencyTable.recipe_name`), and
        the imported architectures' spaces by spec id (a malformed spec is refused before it is named)."""
        out, spaces = {}, {}
        for name, spec in data.get("recipes", {}).items():
            check_name(name, "imported recipe name")
            spaces[spec_id(spec)] = spec_from_dict(spec).space
            out[name] = self.recipe_name(name, spec)
            if out[name] != name:
                log.warning("recipe %r of the import is another architecture than %r here: stored as %r", name,
                            name, out[name])
        return out, spaces

    def _merge(self, data: Mapping[str, Any], names: Mapping[str, str], recipe_names: Mapping[str, str],
               imported: Mapping[str, Any], src: Path) -> int:
        changed = 0
        spaces = {}  # the architectures known here, by spec id: imported calibration subnets must fit theirs
        for name in self.recipes():
            spec = self.recipe(name)
            try:
                spaces[spec_id(spec)] = spec_from_dict(spec).space
            except (TypeError, KeyError, AttributeError, ValueError) as exc:
                raise ValueError(f"{self.path}: the spec of recipe {name!r} is corrupt ({exc}); rebuild the table "
                                 "or import a good copy") from None
        spaces.update(imported)
        with self._write() as db:
            for name, spec in data.get("recipes", {}).items():
                db.execute("INSERT OR IGNORE INTO recipes VALUES (?, ?, ?, ?)",  # its name here: ignored if known
                           (recipe_names[name], spec_id(spec), json.dumps(spec), time.time()))
            for name, info in data["devices"].items():
                self._device_id(db, names[name], DeviceInfo.from_dict(info), True)
            for e in data["entries"]:
                _known_keys(e, _ENTRY_KEYS, f"imported entry {str(e.get('key'))[:60]!r}", src)
                if not isinstance(e["key"], str) or not e["key"]:  # a missing one: "malformed ... KeyError"
                    raise ValueError(f"imported entry key {e['key']!r} must be a non-empty string")
                for f in (*STATS, "measured_at", "load_avg"):
                    _number(e[f], f"entry {e['key']!r} has {f}", src, "nothing imported")
                _not_future(e["measured_at"], f"entry {e['key']!r}", src, "nothing imported")
                _count(e["runs"], f"imported entry {e['key']!r} has runs", src, "nothing imported")
                for f in ("runtime_version", "fingerprint", "protocol"):
                    if not isinstance(e[f], str):
                        raise ValueError(f"imported entry {e['key']!r} has {f}={e[f]!r} in {src}; allowed: a string "
                                         "(nothing imported)")
                dev = self._device_id(db, names[e["device"]], None, True)
                rt = self._runtime_id(db, _imported_runtime(e["runtime"], src), True)
                cur = db.execute("SELECT measured_at FROM entries WHERE device_id = ? AND runtime_id = ? AND key = ?",
                                 (dev, rt, e["key"])).fetchone()
                if cur is None or cur[0] < e["measured_at"]:
                    db.execute(f"INSERT OR REPLACE INTO entries VALUES ({_ENTRY_MARKS})",
                               (dev, rt, e["key"], *(e[f] for f in STATS), e["measured_at"], e["runtime_version"],
                                e["fingerprint"], e["protocol"], e["load_avg"]))
                    changed += 1
            for c in data.get("calibrations", []):
                _known_keys(c, _CAL_KEYS, "imported calibration subnet", src)
                for f in ("measured_ms", "measured_at"):
                    _number(c[f], f"calibration subnet has {f}", src, "nothing imported")
                for f in ("subnet", "spec_id", "runtime_version"):
                    if not isinstance(c[f], str):
                        raise ValueError(f"imported calibration subnet has {f}={repr(c[f])[:60]} in {src}; "
                                         "allowed: a string (nothing imported)")
                if c["spec_id"] not in spaces:
                    raise ValueError(f"imported calibration subnet in {src} is of architecture {c['spec_id'][:16]!r}, "
                                     "which neither the export nor this table holds (nothing imported)")
                check_subnet(c["subnet"], spaces[c["spec_id"]], "imported calibration subnet", src,
                             "nothing imported")
                dev = self._device_id(db, names[c["device"]], None, True)
                rt = self._runtime_id(db, _imported_runtime(c["runtime"], src), True)
                cur = db.execute("SELECT measured_at FROM calibrations WHERE device_id = ? AND runtime_id = ? AND "
                                 "spec_id = ? AND subnet = ?", (dev, rt, c["spec_id"], c["subnet"])).fetchone()
                if cur is None or cur[0] < c["measured_at"]:
                    db.execute(f"INSERT OR REPLACE INTO calibrations ({_CAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (dev, rt, c["spec_id"], c["subnet"], c["measured_ms"], c["measured_at"],
                                c["runtime_version"], c.get("fingerprint", ""), c.get("protocol", "")))
        return changed
