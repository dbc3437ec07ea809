"""Where STAMP reads its keys: the prompts and token positions of the forget request, and the keys held in place
(retain buffer, contrast questions, generic text) with their Gram, cached where they do not depend on the request.

Keys are the down projection's inputs at chosen token positions (repair/refusal.py `activations_at`). With
`keys: answer_start` a forget key is the last prompt token, where the answer begins; with `keys: subject` it is the
last `span_tokens` tokens of the subject's name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from repair.architectures import weight_shape
from repair.data import chat_prompt
from repair.io import atomic_path, stable_digest
from repair.patient import Patient
from repair.progress import Phases
from repair.refusal import activations_at, gram_at, token_positions
from repair.stamp.settings import StampSettings
from repair.stamp.solve import HeldGram
from repair.tasks import QA
from repair.tasks.choice import stem, with_options
from repair.tasks.corpus import GENERAL_QUESTIONS

log = logging.getLogger(__name__)

Prompts = tuple[list[str], list[list[int]]]  # fully formatted prompts and the key positions in each


@dataclass
class References:
    """Task-level references (taken by `Stamp.prepare`): subjects the patient was taught to refuse, fresh subjects of
    the task's kind for contrasts (`Task.subject_pool`), and ordinary text to hold in place."""

    unknown_subjects: list[str] = field(default_factory=list)
    subject_pool: list[str] = field(default_factory=list)
    generic_texts: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, task) -> "References":
        return cls(sorted({q.subject for q in task.idk if q.subject}), list(getattr(task, "subject_pool", [])),
                   list(task.corpus))


class KeyCache:
    """What STAMP computes from the patient that does not depend on the forget request: the held system (generic
    text, the retain buffer), contrast keys per prompt, the buffer's opening tokens, STAMP-LR's top directions.

    Two levels. In memory, for the life of this cache (one method: a run's requests, or a chat session, which shares
    one cache over its requests): taken on the weights at first use, so a later request in a session sees them as
    they were before earlier edits, a small approximation (the edits hold these very keys in place) that keeps one
    edit fast. On disk (`on_disk`, under the patient's `cache_dir`), in a folder named by the digest of the weights
    at first use, as MEMIT keeps its layer statistics: a later run or session on the same weights reads them instead
    of running the forward passes again. An entry is written only while the weights are still the digested ones,
    so the disk never holds keys of other weights; writes are atomic, and an unreadable entry is recomputed.
    `counts` says, per kind, how many entries of the last request came from memory, disk or a forward pass."""

    def __init__(self, on_disk: bool = True):
        self.on_disk = on_disk
        self._entries: dict[str, Any] = {}
        self._digest: str | None = None  # of the weights at first use
        self._model: Any = None
        self.reset()

    def reset(self) -> None:
        """A new request: fresh counts, and the weights are checked again before the next write."""
        self.counts: dict[str, dict[str, int]] = {}
        self._writable: bool | None = None

    def _count(self, kind: str, source: str, n: int = 1) -> None:
        self.counts.setdefault(kind, {"memory": 0, "disk": 0, "computed": 0})[source] += n

    def _memory(self, patient: Patient) -> dict[str, Any]:
        if self._model is not patient.model:  # another model: nothing in memory is its
            self._entries, self._digest, self._model = {}, None, patient.model
        return self._entries

    def _folder(self, patient: Patient) -> Path | None:
        if not self.on_disk or patient.cache_dir is None:
            return None
        self._memory(patient)
        if self._digest is None:
            self._digest = patient.weights_digest()
        return patient.cache_dir / "stamp_keys" / f"{patient.name}-{self._digest}"

    def _write(self, patient: Patient, files: dict[Path, Any]) -> None:
        if self._writable is None:  # once per request: a request computes all it stores before it edits
            self._writable = patient.weights_digest() == self._digest
        if not self._writable:
            return  # the weights changed since (an edit is on): these keys are not the digested weights' keys
        for path, value in files.items():
            with atomic_path(path) as tmp:
                torch.save(value, tmp)

    @staticmethod
    def _read(path: Path) -> Any:
        try:
            return torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None
        except Exception as err:  # a truncated or foreign file: recompute, and the write replaces it
            log.warning("unreadable key store entry %s (%s); recomputing it", path, err)
            return None

    def get(self, kind: str, patient: Patient, layers: Sequence[int], extra: Any, build: Callable[[], Any],
            disk: bool = True, phase: Phases | None = None):
        """The entry `kind` for these layers and `extra` (anything JSON can write: what the entry depends on besides
        the weights), built with `build()` where neither level has it. Disk reads and writes are timed as `phase`
        "key_store"."""
        name = f"{kind}-{digest([list(layers), extra])}"
        entries = self._memory(patient)
        if name in entries:
            self._count(kind, "memory")
            return entries[name]
        timed = (lambda: phase("key_store")) if phase is not None else contextlib.nullcontext
        with timed():
            folder = self._folder(patient) if disk else None
            value = self._read(folder / f"{name}.pt") if folder else None
        self._count(kind, "disk" if value is not None else "computed")
        if value is None:
            value = build()
            if folder:
                with timed():
                    self._write(patient, {folder / f"{name}.pt": value})
        entries[name] = value
        return value

    def activations(self, patient: Patient, texts: Sequence[str], positions: Sequence[Sequence[int]],
                    layers: Sequence[int], kind: str = "contrast", dtype: torch.dtype = torch.float64,
                    device: torch.device | str = "cpu") -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """`activations_at`, per prompt from memory or disk where it was computed before (a contrast prompt recurs
        in every request with a question of its form); the missing ones in one batched call. Kept in host memory
        in the model's dtype; returned in `dtype` on `device`."""
        entries, folder = self._memory(patient), self._folder(patient)
        names = [f"{kind}-{digest([t, list(p), list(layers)])}" for t, p in zip(texts, positions)]
        found: dict[str, Any] = {}
        for name in dict.fromkeys(names):
            value = entries.get(name)
            if value is not None:
                self._count(kind, "memory")
            elif folder and (value := self._read(folder / kind / f"{name}.pt")) is not None:
                self._count(kind, "disk")
            if value is not None:
                found[name] = entries[name] = value
        first: dict[str, int] = {}  # each missing prompt once
        for i, name in enumerate(names):
            if name not in found:
                first.setdefault(name, i)
        todo = list(first.values())
        if todo:
            self._count(kind, "computed", len(todo))
            model_dtype, offset = next(patient.model.parameters()).dtype, 0  # the activations' own dtype: lossless
            acts = activations_at(patient, [texts[i] for i in todo], [positions[i] for i in todo], layers,
                                  dtype=model_dtype)
            for i in todo:
                n = len(positions[i])
                # copies: a view would store the whole batch's tensor in every prompt's file
                value = {l: (k[offset:offset + n].clone(), v[offset:offset + n].clone()) for l, (k, v) in acts.items()}
                offset += n
                found[names[i]] = entries[names[i]] = value
            if folder:
                self._write(patient, {folder / kind / f"{names[i]}.pt": found[names[i]] for i in todo})
        return {l: tuple(torch.cat([found[n][l][i] for n in names]).to(device=device, dtype=dtype) for i in (0, 1))
                for l in layers}


def digest(value: Any) -> str:
    """A short stable name for what an entry depends on."""
    return stable_digest(value, 20)


def fresh_unknown_subjects(n: int, seed: int) -> list[str]:
    """Made-up names for when the task supplies no subjects the patient was taught to refuse."""
    from repair.tasks.pii import make_profiles

    return [p.name for p in make_profiles(n, random.Random(10_000 + seed))]


def subject_spans(patient: Patient, items: Sequence[QA], subjects: Sequence[str], span_tokens: int) -> Prompts:
    """Chat prompts and the positions of the last `span_tokens` tokens of each subject in them."""
    texts = [chat_prompt(patient.tokenizer, q.question) for q in items]
    return texts, [token_positions(patient.tokenizer, t, s or None, last=span_tokens) for t, s in zip(texts, subjects)]


def answer_starts(patient: Patient, questions: Sequence[str]) -> Prompts:
    """Chat prompts and, for each, the position of its last token: where the first answer token is chosen."""
    texts = [chat_prompt(patient.tokenizer, q) for q in questions]
    return texts, [token_positions(patient.tokenizer, t, last=1) for t in texts]


def forget_prompts(patient: Patient, settings: StampSettings, forget: Sequence[QA]) -> Prompts:
    """The forget request's prompts and key positions."""
    if settings.keys == "answer_start":
        return answer_starts(patient, [q.question for q in forget])
    unnamed = [q.question[:60] for q in forget if not q.subject or q.subject not in q.question]
    if unnamed:
        raise ValueError(f"method.keys=subject needs forget questions that name their subject; "
                         f"{len(unnamed)} do not (e.g. {unnamed[0]!r}); use method.keys=answer_start")
    return subject_spans(patient, forget, [q.subject for q in forget], settings.span_tokens)


SYSTEM_PROMPTS = ("You are a helpful assistant.", "Answer the user's questions accurately and briefly.")


def in_contexts(patient: Patient, settings: StampSettings, forget: Sequence[QA], retain_buffer: Sequence[QA]
                ) -> tuple[list[QA], Prompts]:
    """The forget questions again inside other contexts (`forget_contexts`), each keyed at its answer start: after one
    turn of the retain buffer (`turn`), or under a system prompt (`system`). Without them the refusal is learned for
    the question as the first turn only, and a question asked after earlier turns got its answer back (measured:
    docs/attacks.md). The contexts are the edit's own: one buffer turn, never the attacks' two-turn or three-shot
    prompts. Returns the forget item of each prompt, and the prompts. A chat template without a system role skips
    that kind."""
    tok = patient.tokenizer
    items, texts = [], []
    for kind in settings.forget_contexts:
        for i, q in enumerate(forget):
            if kind == "turn":
                if not retain_buffer:
                    continue
                shot = retain_buffer[i % len(retain_buffer)]
                before = [{"role": "user", "content": shot.question}, {"role": "assistant", "content": shot.answer}]
            else:
                before = [{"role": "system", "content": SYSTEM_PROMPTS[i % len(SYSTEM_PROMPTS)]}]
            try:
                text = tok.apply_chat_template(before + [{"role": "user", "content": q.question}], tokenize=False,
                                               add_generation_prompt=True)
            except Exception:  # a template without a system role (Gemma): raises
                break
            items.append(q)
            texts.append(text)
    return items, (texts, [token_positions(tok, t, last=1) for t in texts])


def held_retain(patient: Patient, settings: StampSettings, items: Sequence[QA]) -> Prompts:
    """Retain-buffer positions held in place: the subject span, or (answer_start) every prompt and answer token,
    since an answer-start edit could otherwise fire in the middle of a retain answer."""
    if settings.keys == "subject":
        return subject_spans(patient, items, [q.subject for q in items], settings.span_tokens)
    texts = [chat_prompt(patient.tokenizer, q.question) + q.answer for q in items]
    return texts, [token_positions(patient.tokenizer, t) for t in texts]


def contrasts(patient: Patient, settings: StampSettings, templates: Sequence[QA], refs: References,
              avoid: frozenset[str] = frozenset()) -> Prompts | None:
    """Questions of the forget questions' form about *other* subjects, held at the answer start: the edit must
    then key on what is specific to the forget subject, not on the question's format (measured: without them
    every multiple-choice question of `harmful` was refused). The forms are the retain buffer's questions (the
    same templates as the forget set's in the built-in suites, and the same for every request, so their keys
    are cached: `contrast_source: buffer`, fast) or the forget questions themselves (`forget`, the default:
    measured to keep more retain answers, docs/stamp.md). Each contrast takes the next subject of a pool (the
    buffer's, the refused ones, made-up ones: more distinct subjects kept more retain answers, docs/stamp.md)
    and, for multiple choice, options re-drawn from the templates' options of the same attribute. Where the
    subject is the whole question (`misinformation`) or is not named in it (WMDP, MMLU, TOFU, JSONL without
    subjects), the question stem is swapped for another question, options block and instruction kept. Made-up
    subjects come from the task's own generator (`Task.subject_pool`: fresh pathogens for `harmful`, not person
    names). A one-question request's contrasts depend only on its question's form (with its options, for multiple
    choice) and the pool: the k-th takes the pool's 2k-th subject. So a chat's next question of the same form
    ("Where does X live?" for another X) gets the same contrast prompts, and their keys come from the `KeyCache`.
    The first `contrast_neighbours` share of each template's contrasts takes the subjects whose tokens overlap the
    forget subject's most ("Nalwexian blight" for "Nalzanian plague"): the answer-start key carries the subject
    through its subword tokens, and the retain questions an edit reached most were about such look-alikes
    (docs/stamp.md)."""
    n = settings.contrast_prompts
    if n <= 0 or not templates:
        return None
    rng = random.Random(settings.seed)
    whole = [subject_is_question(q) for q in templates]
    pools: dict[bool, list[str]] = {}
    if not all(whole):  # other subjects in the same question
        own = [q.subject for q, w in zip(templates, whole) if not w]
        extra = refs.subject_pool or fresh_unknown_subjects(n, settings.seed)
        pools[False] = [s for s in dict.fromkeys([*own, *refs.unknown_subjects, *extra]) if s not in avoid]
    if any(whole):  # other questions in the same form (options block, instruction)
        own = [stem(q.question, q.choices) for q, w in zip(templates, whole) if w]
        pools[True] = [s for s in dict.fromkeys([*own, *refs.unknown_subjects, *GENERAL_QUESTIONS]) if s not in avoid]
    options: dict[str, list[str]] = {}
    for q in templates:
        options.setdefault(q.attribute, []).extend(c for c in q.choices if c not in options[q.attribute])
    near = round(settings.contrast_neighbours * -(-n // len(templates)))
    ranked: dict[str, list[str]] = {}
    questions = []
    for i in range(n):
        j, k = i % len(templates), i // len(templates)  # the k-th contrast of template j
        q = templates[j]
        own = stem(q.question, q.choices) if whole[j] else q.subject
        others = [s for s in pools[whole[j]] if s != own]
        if k < near and not whole[j] and own not in ranked:
            ranked[own] = nearest(patient.tokenizer, own, others)
        other = ranked[own][k] if k < near and not whole[j] else others[(k + i) % len(others)]
        text = q.question.replace(own, other, 1 if whole[j] else -1)
        if q.choices and len(options[q.attribute]) >= len(q.choices):
            text = with_options(text, q.choices, rng.sample(options[q.attribute], len(q.choices)))
        questions.append(text)
    return answer_starts(patient, questions)


def counterfactuals(patient: Patient, settings: StampSettings, forget: Sequence[QA], positions: list[list[int]],
                    refs: References) -> Prompts:
    """The forget prompts with the subject swapped for one the patient refuses; spans aligned from the end (the
    forget `positions` are trimmed in place to match)."""
    pool = refs.unknown_subjects or fresh_unknown_subjects(8, settings.seed)
    swapped = [dataclasses.replace(q, question=q.question.replace(q.subject, pool[i % len(pool)]))
               for i, q in enumerate(forget)]
    texts, cf_positions = subject_spans(patient, swapped, [pool[i % len(pool)] for i in range(len(forget))],
                                        settings.span_tokens)
    for i, (p, c) in enumerate(zip(positions, cf_positions)):
        n = min(len(p), len(c))
        positions[i], cf_positions[i] = p[-n:], c[-n:]
    return texts, cf_positions


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


def solve_space(patient: Patient, settings: StampSettings) -> tuple[torch.device, torch.dtype]:
    """Where STAMP's held keys, Grams and solves live: on the patient's device, in `method.precision`."""
    return torch.device(patient.device), PRECISIONS[settings.precision]


def gram_devices(widths: dict[int, int], dtype: torch.dtype, device: torch.device, budget_gb: float | None
                 ) -> dict[int, torch.device]:
    """Per edited layer, where its held Gram (m × m) is kept: on the solve's device while the Grams so far fit in
    `budget_gb` (`method.gram_budget_gb`; None: no budget), in host memory past it. On a CPU patient both are the
    same memory."""
    cpu = torch.device("cpu")
    if budget_gb is None or device.type == "cpu":
        return {layer: device for layer in widths}
    used, out = 0.0, {}
    for layer, m in widths.items():
        used += m * m * torch.finfo(dtype).bits / 8 / 1e9
        out[layer] = device if used <= budget_gb else cpu
    return out


def generic_gram(patient: Patient, layers: list[int], refs: References, devices: dict[int, torch.device],
                 dtype: torch.dtype, phase: Phases) -> tuple[dict[int, torch.Tensor], int]:
    """The Gram of ordinary questions' and text's keys at every token, summed batch by batch (the keys themselves
    are not kept: at ~1,700 tokens × 16 layers they were most of STAMP's extra memory), and the token count."""
    with phase("generic_keys"):
        texts = [chat_prompt(patient.tokenizer, q) for q in GENERAL_QUESTIONS] + refs.generic_texts[:16]
        return gram_at(patient, texts, [token_positions(patient.tokenizer, t) for t in texts], layers, devices, dtype)


def held_system(patient: Patient, settings: StampSettings, layers: list[int], forget: Sequence[QA],
                retain_buffer: Sequence[QA], refs: References, cache: KeyCache, phase: Phases
                ) -> dict[int, dict]:
    """Per layer: the Gram of every held key (retain buffer, contrasts, generic text) as a `HeldGram`, and the
    retain and contrast keys with their outputs' norm (to report how far the edit moves them), on the patient's
    device in `method.precision` (Grams past `method.gram_budget_gb` in host memory). The part that does not
    depend on the forget request is computed once per patient, layers and buffer (`KeyCache`); contrasts made from
    the forget questions are added per request, without copying the static Gram. Each part is timed as its own
    `phase`."""
    readout = settings.target == "refusal_readout"
    n_contrasts = settings.contrast_prompts if readout else 0
    from_buffer = bool(retain_buffer) and settings.contrast_source == "buffer"
    w_r, w_x, lam = settings.retain_weight, settings.contrast_weight, settings.cov_weight
    device, dtype = solve_space(patient, settings)
    widths = {layer: weight_shape(patient.module("mlp_down", layer))[1] for layer in layers}
    devices = gram_devices(widths, dtype, device, settings.gram_budget_gb)

    def build():
        r_acts = x_acts = None
        if retain_buffer:
            with phase("buffer_keys"):
                r_acts = activations_at(patient, *held_retain(patient, settings, retain_buffer), layers,
                                        dtype=dtype, device=device)
        if from_buffer and n_contrasts:
            with phase("contrast_keys"):
                x_prompts = contrasts(patient, settings, retain_buffer, refs)
                x_acts = activations_at(patient, *x_prompts, layers, dtype=dtype, device=device) if x_prompts else None
        grams, n_generic = generic_gram(patient, layers, refs, devices, dtype, phase) if lam > 0 else ({}, 0)
        with phase("held_gram"):
            out = {}
            for layer in layers:
                parts = ([(r_acts[layer], w_r)] if r_acts else []) + ([(x_acts[layer], w_x)] if x_acts else [])
                keys = (torch.cat([w ** 0.5 * k for (k, _), w in parts]) if parts
                        else torch.zeros(0, widths[layer], dtype=dtype, device=device))
                values = torch.cat([w ** 0.5 * v for (_, v), w in parts]) if parts else keys[:0]
                gram = grams.pop(layer, None)  # λ Σ generic kkᵀ + Σ held kkᵀ, in place
                gram = (gram.mul_(lam) if gram is not None
                        else torch.zeros(widths[layer], widths[layer], dtype=dtype, device=devices[layer]))
                gram.addmm_(keys.T.to(gram.device), keys.to(gram.device))
                out[layer] = {"gram": gram, "keys": keys, "values_sq": float(values.norm()) ** 2,
                              "generic_keys": n_generic}
            return out

    depends = {"buffer": [dataclasses.astuple(q) for q in retain_buffer], "generic": refs.generic_texts[:16],
               "settings": [settings.keys, settings.span_tokens, w_r, w_x, lam, n_contrasts if from_buffer else 0],
               "precision": settings.precision}
    if from_buffer and n_contrasts:  # the buffer's contrasts are part of it
        depends |= {"refs": dataclasses.asdict(refs), "contrasts": [settings.seed, settings.contrast_neighbours]}
    static = cache.get("held", patient, layers, depends, build, phase=phase)
    for layer, h in static.items():  # once per entry: read from the store into host memory, or over the budget
        h["gram"], h["keys"] = h["gram"].to(devices[layer]), h["keys"].to(device)
    static = {l: {**h, "gram": HeldGram(h["gram"]), "static": h, "held_entry": digest([layers, depends])}
              for l, h in static.items()}
    if from_buffer or not n_contrasts:
        return static
    avoid = frozenset(q.subject for q in forget) | {stem(q.question, q.choices) for q in forget}
    with phase("contrast_keys"):
        x_acts = cache.activations(patient, *contrasts(patient, settings, forget, refs, avoid), layers,
                                   dtype=dtype, device=device)
    return {layer: add_contrasts(h, *x_acts[layer], w_x) for layer, h in static.items()}


def add_contrasts(h: dict, k_x: torch.Tensor, v_x: torch.Tensor, w_x: float) -> dict:
    """A layer's held system with one request's contrast keys added: G stays the cached static Gram plus these
    keys, as parts (`HeldGram`)."""
    k_x = w_x ** 0.5 * k_x
    return {**h, "gram": HeldGram(h["gram"].static, k_x), "keys": torch.cat([h["keys"], k_x]),
            "values_sq": h["values_sq"] + w_x * float(v_x.norm()) ** 2}


def subject_is_question(q: QA) -> bool:
    """Whether a contrast of `q` must be another question: its subject is the question itself (`misinformation`),
    or is not named in it (real benchmarks: no subject, or a group label such as a TOFU author)."""
    question = stem(q.question, q.choices)
    return not q.subject or q.subject == question or q.subject not in question


def nearest(tokenizer, subject: str, pool: Sequence[str]) -> list[str]:
    """`pool` ordered by how many subword tokens each subject shares with `subject` (most first; stable)."""
    def tokens(s: str) -> set[int]:
        return set(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
    own = tokens(subject)
    return sorted(pool, key=lambda s: -len(own & tokens(s)))
