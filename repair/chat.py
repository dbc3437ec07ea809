"""Chat with the patient; ask it to forget something and it will (and can be made to remember again).

    python -m repair.chat [--script FILE] [--out DIR] [hydra overrides ...]      (console script: repair-chat)
    python -m repair.chat patient=tiny watchdog=llm surgeon=llm ledger.dir=/tmp/ledger

Config: conf/chat.yaml. `--script FILE` reads the user's messages from a file (one per line, `#` comments), for tests
and demos. Every session writes transcript.jsonl and transcript.md to its folder (chat.out_dir/<time>, or --out).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterable, TextIO

from omegaconf import DictConfig

from repair.interactive.session import RepairSession, open_session
from repair.setup import CONF, compose

log = logging.getLogger(__name__)


def compose_chat(overrides: list[str], config_dir: Path = CONF) -> DictConfig:
    """conf/chat.yaml (run.py's base config plus the chat's groups) with `overrides`."""
    return compose("chat", overrides, config_dir)


def read_script(path: str | Path) -> list[str]:
    """User messages from a script file: one per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chat script {str(path)!r} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _interactive(stream: TextIO) -> Iterable[str]:
    while True:
        try:
            yield input("you> ")
        except EOFError:
            return


def converse(session: RepairSession, messages: Iterable[str], out: TextIO, echo: bool) -> int:
    """Feed messages to the session and write the replies; returns how many messages were handled."""
    n = 0
    for message in messages:
        if not message.strip():
            continue
        if echo:
            out.write(f"you> {message}\n")
        reply = session.handle(message)
        latency = f"  [{', '.join(f'{k} {v:.2f}s' for k, v in reply.latency_s.items())}]" if reply.latency_s else ""
        out.write(f"{reply.role}> {reply.text}{latency}\n")
        out.flush()
        n += 1
        if reply.kind == "quit":
            break
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="repair-chat", description=__doc__.split("\n\n")[0],
                                     epilog="Other arguments are Hydra overrides of conf/chat.yaml, e.g. patient=tiny")
    parser.add_argument("--script", help="read the user's messages from this file instead of the terminal")
    parser.add_argument("--out", help="folder for this session's transcript (default: chat.out_dir/<time>)")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; valid: --script, --out, --log-level, or Hydra overrides key=value")
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    messages = read_script(args.script) if args.script else None  # a missing script fails before loading anything
    cfg = compose_chat(overrides)
    session = open_session(cfg, args.out)
    out = sys.stdout
    out.write(f"RePAIR chat with {session.patient.name} (task {session.task.name}); /help lists the commands. "
              f"Transcript: {session.transcript.folder}\n")

    def progress(line: str) -> None:
        out.write(f"repair> … {line}\n")
        out.flush()

    session.progress = progress
    notice = session.startup_notice()
    if notice:
        out.write(f"repair> {notice}\n")
    converse(session, messages if messages is not None else _interactive(sys.stdin), out, echo=messages is not None)
    out.write(f"Transcript written to {session.transcript.markdown_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
