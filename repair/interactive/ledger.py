"""The ledger: every edit the chat made, so a user can audit and undo what the model forgot.

A folder per base model (patient + implant) holding `index.json` (one entry per edit: request, plan, verification,
latencies, status) and one `<id>.safetensors` patch per kept edit. Every write is atomic. Statuses: `active`
(applied, re-applied when a session starts), `reverted` (undone by the user), `rolled_back` (failed verification;
kept for the audit, never applied).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from repair.io import write_json
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
        """Copy entries (all by default) and their patches to a folder for audit or transfer."""
        chosen = [self.get(i) for i in ids] if ids else list(self._entries)
        target = Path(target).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        for entry in chosen:
            if entry.get("patch"):
                shutil.copy2(self.patch_path(entry["id"]), target / entry["patch"])
        write_json(target / "index.json", {"base": self.base, "entries": chosen})
        return target
