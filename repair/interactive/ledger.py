"""The ledger: every edit the chat made, so a user can audit and undo what the model forgot.

A folder per base model (patient + implant) holding `index.json` (one entry per edit: request, plan, verification,
latencies, status) and one `<id>.safetensors` patch per kept edit. Every write is atomic. Statuses: `active`
(applied, re-applied when a session starts), `reverted` (undone by the user), `rolled_back` (failed verification;
kept for the audit, never applied).
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from repair.io import atomic_path, write_json
from repair.patches import Patch

log = logging.getLogger(__name__)
STATUSES = ("active", "reverted", "rolled_back")


class Ledger:
    def __init__(self, folder: str | Path, base: str):
        self.folder = Path(folder).expanduser()
        self.base = base
        self.index = self.folder / "index.json"
        self._entries: list[dict[str, Any]] = []
        if self.index.exists():
            data = json.loads(self.index.read_text())
            if data.get("base") != base:
                raise ValueError(f"ledger {self.folder} belongs to base model {data.get('base')!r}, not {base!r}; "
                                 "use another ledger.dir")
            self._entries = data["entries"]

    # ------------------------------------------------------------------------------------------------ reading
    def entries(self, status: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown ledger status {status!r}; valid choices: {', '.join(STATUSES)}")
        return [e for e in self._entries if status is None or e["status"] == status]

    def get(self, entry_id: str) -> dict[str, Any]:
        for e in self._entries:
            if e["id"] == entry_id:
                return e
        known = ", ".join(e["id"] for e in self._entries) or "none yet"
        raise KeyError(f"no ledger entry {entry_id!r}; known: {known}")

    def patch_path(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.safetensors"

    def load_patch(self, entry_id: str) -> Patch:
        return Patch.load(self.patch_path(entry_id))

    # ------------------------------------------------------------------------------------------------ writing
    def _save(self) -> None:
        write_json(self.index, {"base": self.base, "entries": self._entries})

    def add(self, entry: dict[str, Any], patch: Patch | None, status: str) -> str:
        """Record an edit (with its patch, if kept) and return its id."""
        if status not in STATUSES:
            raise ValueError(f"unknown ledger status {status!r}; valid choices: {', '.join(STATUSES)}")
        entry_id = f"f{len(self._entries) + 1:03d}"
        record = {"id": entry_id, "status": status, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **entry,
                  "patch": None}
        if patch is not None:
            patch.provenance.update({"ledger_id": entry_id, "base": self.base})
            patch.save(self.patch_path(entry_id))
            record["patch"] = self.patch_path(entry_id).name
        self._entries.append(record)
        self._save()
        return entry_id

    def update(self, entry_id: str, **fields: Any) -> None:
        """Set fields of an entry, written at once (an index read after any write is complete)."""
        self.get(entry_id).update(fields)
        self._save()

    def set_status(self, entry_id: str, status: str, **extra: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown ledger status {status!r}; valid choices: {', '.join(STATUSES)}")
        entry = self.get(entry_id)
        entry["status"] = status
        entry.setdefault("history", []).append({"status": status, "at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                **extra})
        self._save()

    def export(self, target: str | Path, ids: list[str] | None = None) -> Path:
        """One file (a tar bundle: `index.json` and the entries' patches) with every entry, or those of `ids`, for
        audit or transfer; written atomically. `import_bundle` reads it back."""
        chosen = [self.get(i) for i in ids] if ids else list(self._entries)
        target = Path(target).expanduser()
        if target.is_dir():
            raise ValueError(f"/export writes one file, and {target} is a folder; give a file name such as "
                             f"{target / 'edits.tar'}")
        index = json.dumps({"base": self.base, "entries": chosen}, indent=2, default=str).encode()
        with atomic_path(target) as tmp, tarfile.open(tmp, "w") as bundle:
            info = tarfile.TarInfo("index.json")
            info.size, info.mtime = len(index), int(time.time())
            bundle.addfile(info, io.BytesIO(index))
            for entry in chosen:
                if entry.get("patch"):
                    bundle.add(self.patch_path(entry["id"]), arcname=entry["patch"])
        return target

    def import_bundle(self, source: str | Path) -> list[tuple[str, dict[str, Any], Patch | None]]:
        """Add the entries of an `export` bundle made on the same base model, with new ids (the bundle's id and file
        kept as `imported_from`); returns (new id, entry, patch) per entry, patch None where it has none. A bundle of
        another base model is refused: its edits were made on other weights."""
        source = Path(source).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"no bundle {source} (make one with /export FILE)")
        with tarfile.open(source) as bundle, tempfile.TemporaryDirectory() as folder:
            data = json.loads(bundle.extractfile("index.json").read())
            if data.get("base") != self.base:
                raise ValueError(f"bundle {source} holds edits of base model {data.get('base')!r}, not this "
                                 f"session's {self.base!r}; nothing was imported")
            added = []
            for entry in data["entries"]:
                patch = None
                if entry.get("patch"):  # read as bytes under its bare name: nothing is extracted outside `folder`
                    local = Path(folder) / Path(entry["patch"]).name
                    local.write_bytes(bundle.extractfile(entry["patch"]).read())
                    patch = Patch.load(local)
                fields = {k: v for k, v in entry.items() if k not in ("id", "status", "created", "patch")}
                new_id = self.add(fields | {"imported_from": f"{source.name}:{entry['id']}"}, patch,
                                  entry["status"])
                added.append((new_id, self.get(new_id), patch))
        return added
