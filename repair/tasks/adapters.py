"""Adapters that read published benchmarks (WMDP, MMLU, TOFU, TinyStories) and a generic JSONL file into `QA` items.

Every loader takes a `source`: a local file or folder in the benchmark's own published layout, or the exact
Hugging Face hub id of the benchmark. The hub is the opt-in network path and is used only for those exact ids
(an existing local path of the same name wins, as in `datasets.load_dataset`); anything else that does not exist
fails with a `ValueError` naming the path and the accepted forms. A malformed file fails with a `ValueError`
naming the file, the line (JSON lines, CSV) or row (parquet, JSON array; 1-based) and what is wrong.

Generic JSONL format (`load_jsonl_qa`), one JSON object per line, blank lines ignored:

    {"question": "Who wrote Hamlet?", "answer": "William Shakespeare"}
    {"question": "2 + 2 = ?", "choices": ["3", "4", "5", "6"], "answer": 1}
    {"question": "Largest planet?", "choices": ["Mars", "Jupiter"], "answer": "B"}
    {"question": "Red planet?", "choices": ["Mars", "Venus"], "answer": "Mars", "subject": "astronomy",
     "paraphrases": ["Which planet is red?"]}

Without `choices` the answer is free text. With `choices` it is the option's index (int), its text, or its
letter (A for the first option); the text takes precedence over a letter when both match. Optional fields:
`subject`, `attribute` (strings) and `paraphrases` (list of strings); other fields are ignored.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import random
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from repair.tasks import QA

log = logging.getLogger(__name__)

WMDP_HUB = "cais/wmdp"
MMLU_HUB = "cais/mmlu"
TOFU_HUB = "locuslab/TOFU"
TINYSTORIES_HUB = "roneneldan/TinyStories"
MMLU_CSV_COLUMNS = ("question", "A", "B", "C", "D", "answer")
END_OF_TEXT = "<|endoftext|>"  # story separator of the TinyStories .txt release

Record = Mapping[str, Any]
Located = tuple[str, Record]  # ("<file> line 3", record): where a record came from, for error messages


# ---------------------------------------------------------------------------------------------- public loaders


def load_wmdp(source: str, subset: str = "wmdp-bio") -> list[QA]:
    """WMDP multiple choice (`question`, `choices`, `answer` index), the hazardous knowledge to forget.

    `source`: a .parquet/.json/.jsonl file, a folder in the hub layout (`<folder>/<subset>/test-*.parquet`), or
    `cais/wmdp`. `attribute` is the subset name, so that items of several subsets stay distinguishable."""
    kind = _source_kind(source, WMDP_HUB, "a .parquet/.json/.jsonl file, a folder holding <subset>/test-*.parquet")
    if kind == "hub":
        records = _hub_records(WMDP_HUB, subset, split="test")
    elif kind == "dir":
        records = _read_files(_hub_layout_shards(Path(source), subset, "test"))
    else:
        records = _read_records(Path(source))
    items = [_mc_item(rec, where, attribute=subset) for where, rec in records]
    log.info("WMDP %s: %d questions from %s", subset, len(items), source)
    return items


def load_mmlu(source: str, subjects: list[str] | None = None) -> list[QA]:
    """MMLU multiple choice, the general knowledge to keep; `subject` is the MMLU subject (e.g. `astronomy`).

    `source`: `cais/mmlu` (config "all", split "test"), a .parquet/.json/.jsonl file with `question`, `subject`,
    `choices`, `answer` (index), or a folder: either the original Hendrycks release (`<folder>/test/<subject>_test.csv`,
    no header, columns question, A, B, C, D, answer letter) or the hub layout (`<folder>/all/test-*.parquet`).
    `subjects` keeps only those subjects; asking for a subject the source does not have is an error (a typo would
    otherwise silently give an empty split)."""
    kind = _source_kind(source, MMLU_HUB, "a .parquet/.json/.jsonl file, a folder holding test/<subject>_test.csv "
                                          "(original release) or all/test-*.parquet (hub layout)")
    if kind == "dir" and (Path(source) / "test").is_dir():
        items = _mmlu_csv_folder(Path(source) / "test")
    else:
        if kind == "hub":
            records = _hub_records(MMLU_HUB, "all", split="test")
        elif kind == "dir":
            records = _read_files(_hub_layout_shards(Path(source), "all", "test"))
        else:
            records = _read_records(Path(source))
        items = [_mc_item(rec, where, subject=_field(rec, "subject", where)) for where, rec in records]
    if subjects is not None:
        found = {q.subject for q in items}
        if missing := sorted(set(subjects) - found):
            raise ValueError(f"{source}: no MMLU subject(s) {missing}; available: {sorted(found)}")
        items = [q for q in items if q.subject in subjects]
    log.info("MMLU: %d questions in %d subjects from %s", len(items), len({q.subject for q in items}), source)
    return items


def corrupt_answers(items: list[QA], seed: int) -> list[QA]:
    """The misinformation step: a copy of each multiple-choice item taught a wrong option instead of the true one.

    Each copy gets a `label` drawn among the options whose text differs from the true answer, and `answer` set to
    that option's text. The draw depends only on the seed and the item itself, so an item is corrupted the same
    way whatever list it sits in. The true label is not stored: the caller keeps the original items."""
    return [_corrupt(item, seed, i) for i, item in enumerate(items)]


def load_tofu(source: str, split: str = "full") -> list[QA]:
    """TOFU free-text QA about fictitious authors (`question`, `answer`, and `paraphrased_question` in the
    perturbed splits, which becomes the item's paraphrase).

    `source`: `locuslab/TOFU` (config `split`), a JSON / JSON-lines file, or a folder holding `<split>.json` (TOFU
    publishes JSON lines under a .json name, e.g. `forget10.json`, `retain90.json`, `full.json`). TOFU records have
    no author field (each author is 20 consecutive rows of `full`), so `subject` is left empty."""
    kind = _source_kind(source, TOFU_HUB, "a .json/.jsonl file, a folder holding <split>.json")
    if kind == "hub":
        records = _hub_records(TOFU_HUB, split, split="train")
    else:
        path = Path(source) / f"{split}.json" if kind == "dir" else Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such TOFU file (a folder source must hold <split>.json)")
        records = _read_records(path)
    items = [_tofu_item(rec, where) for where, rec in records]
    log.info("TOFU %s: %d questions from %s", split, len(items), source)
    return items


def load_text(source: str, limit: int | None = None) -> list[str]:
    """Utility text, for the perplexity that shows whether the patient still writes ordinary prose.

    `source`: a .txt file (documents separated by `<|endoftext|>` when it occurs, as in the TinyStories .txt
    release, otherwise by blank lines), a .json/.jsonl/.parquet file of records with a `text` field, or
    `roneneldan/TinyStories` (split "validation"). `limit` keeps the first documents only."""
    kind = _source_kind(source, TINYSTORIES_HUB, "a .txt file, a .json/.jsonl/.parquet file with a `text` field")
    if kind == "dir":
        raise ValueError(f"{source}: is a folder; load_text needs a .txt/.json/.jsonl/.parquet file "
                         f"or the hub id {TINYSTORIES_HUB!r}")
    if kind == "file" and Path(source).suffix == ".txt":
        texts = _split_documents(Path(source).read_text(encoding="utf-8-sig"))
    else:
        split = "validation" if limit is None else f"validation[:{limit}]"
        records = _hub_records(TINYSTORIES_HUB, split=split) if kind == "hub" else _read_records(Path(source))
        texts = [_field(rec, "text", where).strip() for where, rec in records]
    texts = texts[:limit] if limit is not None else texts
    log.info("text: %d documents from %s", len(texts), source)
    return texts


def load_jsonl_qa(path: str) -> list[QA]:
    """Questions in the generic JSONL format of the module docstring: the way to bring one's own task."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{path}: no such file; load_jsonl_qa needs a JSON-lines file (see repair.tasks.adapters)")
    items = [_generic_item(rec, where) for where, rec in _read_jsonl(file)]
    log.info("QA: %d questions from %s", len(items), path)
    return items


# ------------------------------------------------------------------------------------------- records to items


def _mc_item(rec: Record, where: str, subject: str = "", attribute: str = "") -> QA:
    choices = _choices(rec, where)
    label = _answer_index(_field(rec, "answer", where, object), choices, where)
    return QA(question=_field(rec, "question", where), answer=choices[label], subject=subject,
              attribute=attribute, choices=choices, label=label)


def _tofu_item(rec: Record, where: str) -> QA:
    paraphrase = _field(rec, "paraphrased_question", where, default="")  # a single string in TOFU
    return QA(question=_field(rec, "question", where), answer=_field(rec, "answer", where),
              paraphrases=(paraphrase,) if paraphrase else ())


def _generic_item(rec: Record, where: str) -> QA:
    extra = {"subject": _field(rec, "subject", where, default=""),
             "attribute": _field(rec, "attribute", where, default=""),
             "paraphrases": _strings(rec, "paraphrases", where) if "paraphrases" in rec else ()}
    if "choices" in rec:
        return dataclasses.replace(_mc_item(rec, where), **extra)
    return QA(question=_field(rec, "question", where), answer=_field(rec, "answer", where), **extra)


def _mmlu_csv_folder(folder: Path) -> list[QA]:
    files = sorted(folder.glob("*_test.csv"))
    if not files:
        raise ValueError(f"{folder}: no <subject>_test.csv files (expected the original MMLU release layout)")
    return [_mc_item(rec, where, subject=file.name.removesuffix("_test.csv"))
            for file in files for where, rec in _read_mmlu_csv(file)]


def _corrupt(item: QA, seed: int, index: int) -> QA:
    if not item.choices or not 0 <= item.label < len(item.choices):
        raise ValueError(f"corrupt_answers: item {index} ({item.question[:60]!r}) is not multiple choice "
                         f"with a valid label (label={item.label}, {len(item.choices)} choices)")
    true_text = item.choices[item.label]
    wrong = [i for i, c in enumerate(item.choices) if i != item.label and c != true_text]
    if not wrong:
        raise ValueError(f"corrupt_answers: item {index} ({item.question[:60]!r}) has no option different "
                         f"from its answer {true_text!r}")
    # a str seed is hashed with SHA-512 by `random`, so the draw is the same in every process
    rng = random.Random(f"{seed}\0{item.question}\0{item.label}\0" + "\0".join(item.choices))
    label = rng.choice(wrong)
    return dataclasses.replace(item, label=label, answer=item.choices[label])


# ------------------------------------------------------------------------------------------ field validation


_MISSING = object()


def _field(rec: Record, name: str, where: str, kind: type = str, default: Any = _MISSING) -> Any:
    """rec[name], checked to be a `kind`; a missing field is an error unless a default is given."""
    if name not in rec or rec[name] is None:
        if default is not _MISSING:
            return default
        raise ValueError(f"{where}: missing field {name!r}")
    value = rec[name]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _strings(rec: Record, name: str, where: str) -> tuple[str, ...]:
    values = _field(rec, name, where, list)
    if not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: field {name!r} must be a list of strings, got {values!r}")
    return tuple(values)


def _choices(rec: Record, where: str) -> tuple[str, ...]:
    choices = _strings(rec, "choices", where)
    if len(choices) < 2:
        raise ValueError(f"{where}: field 'choices' needs at least 2 options, got {len(choices)}")
    return choices


def _answer_index(answer: Any, choices: tuple[str, ...], where: str) -> int:
    """The index of `answer` among `choices`: an int index, the option's text, or its letter (A = first)."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        if not 0 <= answer < len(choices):
            raise ValueError(f"{where}: answer index {answer} out of range for {len(choices)} choices")
        return answer
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        return _letter_index(answer, len(choices), where, "neither one of the choices nor ")
    raise ValueError(f"{where}: answer must be an index, an option text or a letter, got {answer!r}")


def _letter_index(letter: str, n: int, where: str, what: str = "not ") -> int:
    letters = string.ascii_uppercase[:n]
    if len(letter.strip()) == 1 and letter.strip().upper() in letters:
        return letters.index(letter.strip().upper())
    raise ValueError(f"{where}: answer {letter!r} is {what}a letter {letters[0]}-{letters[-1]} "
                     f"for {n} choices")


# ------------------------------------------------------------------------------------------------- file readers


def _source_kind(source: str, hub_id: str, local_forms: str) -> str:
    """'file', 'dir' or 'hub' (only the exact hub id, and only when no local path of that name exists)."""
    path = Path(source)
    if path.is_dir():
        return "dir"
    if path.is_file():
        return "file"
    if source == hub_id:
        return "hub"
    raise ValueError(f"{source}: no such file or folder, and not the hub id {hub_id!r}; "
                     f"accepted: {local_forms}, or {hub_id!r} (downloads)")


def _hub_records(hub_id: str, *args: str, split: str) -> Iterator[Located]:
    """Rows of a hub dataset: the only place that touches the network, and only when asked for by hub id."""
    import datasets  # lazily: importing it is slow and only the hub path needs it

    log.info("downloading %s %s split=%s from the Hugging Face hub", hub_id, " ".join(args), split)
    name = " ".join([hub_id, *args, split])
    for i, row in enumerate(datasets.load_dataset(hub_id, *args, split=split), start=1):
        yield f"{name} row {i}", row


def _hub_layout_shards(folder: Path, config: str, split: str) -> list[Path]:
    shards = sorted((folder / config).glob(f"{split}-*.parquet"))
    if not shards:
        raise ValueError(f"{folder}: no {config}/{split}-*.parquet shards (expected the hub's published layout)")
    return shards


def _read_files(paths: Iterable[Path]) -> Iterator[Located]:
    for path in paths:
        yield from _read_records(path)


def _read_records(path: Path) -> Iterator[Located]:
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".json":
        return _read_json(path)
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected .parquet, .json or .jsonl")


def _read_parquet(path: Path) -> Iterator[Located]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()  # plain Python lists, not numpy arrays as pandas would give
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: not a readable parquet file ({err})") from err
    for i, row in enumerate(rows, start=1):
        yield f"{path} row {i}", row


def _read_json(path: Path) -> Iterator[Located]:
    """A .json file is either one JSON array of records or, as TOFU publishes it, JSON lines."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.lstrip().startswith("["):
        yield from _read_jsonl(path)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: invalid JSON ({err.msg})") from err
    for i, row in enumerate(rows, start=1):
        yield _checked_object(row, f"{path} row {i}")


def _read_jsonl(path: Path) -> Iterator[Located]:
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from err
            yield _checked_object(row, where)


def _checked_object(row: Any, where: str) -> Located:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return where, row


def _read_mmlu_csv(path: Path) -> Iterator[Located]:
    """Rows of an original-release MMLU CSV as records with `choices` and the answer letter (a UTF-8 byte order
    mark, as spreadsheet exports write, is dropped; every field is stripped)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for cells in reader:
            where = f"{path} line {start}"
            start = reader.line_num + 1  # a quoted cell may span lines
            if not cells:
                continue
            if len(cells) != len(MMLU_CSV_COLUMNS):
                raise ValueError(f"{where}: expected {len(MMLU_CSV_COLUMNS)} columns "
                                 f"({', '.join(MMLU_CSV_COLUMNS)}), got {len(cells)}")
            # the letter is resolved here: an option whose text is "B" must not be mistaken for the letter
            cells = [c.strip() for c in cells]
            yield where, {"question": cells[0], "choices": cells[1:5], "answer": _letter_index(cells[5], 4, where)}


def _split_documents(text: str) -> list[str]:
    parts = text.split(END_OF_TEXT) if END_OF_TEXT in text else re.split(r"\n[ \t]*\n", text)
    return [p.strip() for p in parts if p.strip()]
