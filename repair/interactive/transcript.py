"""The session transcript: every message, every repair step and its latency, as JSON lines and Markdown.

Both files are rewritten atomically after each event, so an interrupted session still leaves a complete record.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from repair.io import atomic_path

ROLES = {"user": "user", "patient": "patient", "repair": "repair", "system": "system"}


class Transcript:
    def __init__(self, folder: str | Path, header: dict[str, Any]):
        self.folder = Path(folder)
        self.header = header
        self.events: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self._write()

    def add(self, role: str, text: str, **data: Any) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"unknown transcript role {role!r}; valid choices: {', '.join(ROLES)}")
        event = {"t": round(time.perf_counter() - self.started, 3), "role": role, "text": text, **data}
        self.events.append(event)
        self._write()
        return event

    @property
    def jsonl_path(self) -> Path:
        return self.folder / "transcript.jsonl"

    @property
    def markdown_path(self) -> Path:
        return self.folder / "transcript.md"

    def _write(self) -> None:
        lines = [json.dumps({"header": self.header}, default=str)]
        lines += [json.dumps(e, ensure_ascii=False, default=str) for e in self.events]
        with atomic_path(self.jsonl_path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
        with atomic_path(self.markdown_path) as tmp:
            tmp.write_text(self.markdown())

    def markdown(self) -> str:
        h = self.header
        out = [f"# Chat session {h.get('started', '')}", "",
               f"patient `{h.get('patient')}`, task `{h.get('task')}`, watchdog `{h.get('watchdog')}`, "
               f"surgeon `{h.get('surgeon')}`, method `{h.get('method')}`", ""]
        for e in self.events:
            who = {"user": "**user**", "patient": "**patient**", "repair": "*repair*", "system": "*system*"}[e["role"]]
            text = e["text"].replace("\n", "  \n> ")
            out.append(f"> {who} ({e['t']:.1f} s): {text}")
            if e.get("latency_s"):
                steps = ", ".join(f"{k} {v:.2f} s" for k, v in e["latency_s"].items())
                out.append(f">  \n> latency: {steps}")
            out.append("")
        return "\n".join(out)
