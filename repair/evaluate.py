"""Batched greedy generation and scoring → a metrics dict plus per-sample records. The evaluator never edits."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from repair.data import chat_prompt, padding_side
from repair.loglik import choice_loglik_accuracy, run_lm_eval
from repair.metrics import perplexity, rouge_l_recall
from repair.patient import Patient
from repair.progress import progress
from repair.tasks import QA, Task
from repair.tasks.choice import parse_choice

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(patient: Patient, questions: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
             desc: str = "generate") -> list[str]:
    """Greedy answers to chat questions, batched with left padding."""
    return generate_prompts(patient, [chat_prompt(patient.tokenizer, q) for q in questions], max_new_tokens,
                            batch_size, desc)


@torch.no_grad()
def generate_prompts(patient: Patient, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16,
                     desc: str = "generate") -> list[str]:
    """Greedy continuations of fully formatted prompts (multi-turn chats, prefilled answers), left-padded."""
    tok, model = patient.tokenizer, patient.model
    answers: list[str] = []
    with padding_side(tok, "left"):
        for start in progress(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) <= batch_size):
            enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(patient.device)
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [a.strip() for a in answers]


SCORINGS = ("rouge", "choice")


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def _bad(key: str, value, valid: str) -> ValueError:
    return ValueError(f"eval.{key} = {value!r} is invalid; valid: {valid}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_eval(cfg) -> None:
    """Check the `eval` config (conf/eval/default.yaml) before any slow step, naming the bad value and the valid
    ones. `eval.attacks` is checked by `repair.attacks.build_attacks`."""
    cfg = _plain(cfg)
    for key in ("max_new_tokens", "batch_size"):
        if key not in cfg:
            raise ValueError(f"eval.{key} is missing; valid: an integer >= 1")
        if not _is_int(cfg[key]) or cfg[key] < 1:
            raise _bad(key, cfg[key], "an integer >= 1")
    limit = cfg.get("max_samples")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise _bad("max_samples", limit, "null (every item) or an integer >= 1")
    for key in ("paraphrases", "ppl", "loglik"):
        if key in cfg and not isinstance(cfg[key], bool):
            raise _bad(key, cfg[key], "true or false")
    spec = cfg.get("lm_eval")
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise _bad("lm_eval", spec, "a mapping with tasks, include_path, limit")
    tasks = spec.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise _bad("lm_eval.tasks", tasks, "a list of lm-eval task names, e.g. [mmlu] (empty: none)")
    include = spec.get("include_path")
    if include is not None and not Path(str(include)).expanduser().is_dir():
        raise _bad("lm_eval.include_path", include, "null or an existing folder of lm-eval task YAMLs")
    limit = spec.get("limit")
    if limit is not None and not ((_is_int(limit) and limit >= 1) or (isinstance(limit, float) and 0 < limit < 1)):
        raise _bad("lm_eval.limit", limit, "null (every example), an integer >= 1 (examples per task) or a "
                                           "fraction in (0, 1)")


def paraphrased(cfg, forget: Sequence[QA]) -> tuple[list[QA], str]:
    """The forget items scored in paraphrased form (those with a paraphrase, among the first `eval.max_samples`),
    and the protocol's note on it. Without any, there is no `*_paraphrase` metric: it would be F-RL / Acc_f again."""
    if not cfg.get("paraphrases", True):
        return [], "off: eval.paraphrases=false"
    items = _limited(forget, cfg)
    with_para = [q for q in items if q.paraphrases]
    if not with_para:
        return [], "off: the forget items have no paraphrases"
    note = "on: each forget question's first paraphrase"
    if len(with_para) < len(items):
        note += f" ({len(with_para)} of {len(items)} forget items have one; the others are left out)"
    return with_para, note


def _limited(items: Sequence[QA], cfg) -> list[QA]:
    limit = cfg.get("max_samples")
    return list(items)[: int(limit)] if limit else list(items)


def protocol(cfg, scoring: str = "rouge", forget: Sequence[QA] | None = None) -> dict:
    """How the numbers were measured; two numbers are only comparable when this matches. With the task's `forget`
    items it also says whether (and on which items) the paraphrase metrics were measured."""
    out = {"scorer": "generation", "decoding": "greedy", "max_new_tokens": int(cfg.max_new_tokens),
           "template": "chat", "ppl": "token-level perplexity of plain text, no template"}
    if scoring == "choice":
        out["accuracy"] = "option parsed from the generated answer (letter or unique option text); refusal = wrong"
        if cfg.get("loglik"):
            out["accuracy_loglik"] = "lm-eval multiple_choice: log-likelihood of the option letter opening the chat answer"
    out["rouge"] = "rougeL recall, rouge-score, stemmer on"
    out["fact"] = "percent of answers containing the exact fact (e.g. the phone number), case-insensitive"
    if forget is not None:
        out["paraphrases"] = paraphrased(cfg, forget)[1]
    return out


def score_split(patient: Patient, items: Sequence[QA], split: str, cfg, paraphrase: bool = False) -> list[dict]:
    questions = [q.paraphrases[0] if paraphrase and q.paraphrases else q.question for q in items]
    answers = generate(patient, questions, int(cfg.max_new_tokens), int(cfg.batch_size), desc=f"eval {split}")
    return [score_answer(q, question, gen, split) for q, question, gen in zip(items, questions, answers)]


def score_answer(q: QA, question: str, gen: str, split: str, reference: str | None = None) -> dict:
    """One per-sample record: ROUGE-L recall against `reference` (default: the item's answer), the parsed option
    of a multiple-choice item, and whether the exact fact is in the answer."""
    reference = q.answer if reference is None else reference
    row = {"split": split, "subject": q.subject, "attribute": q.attribute, "question": question,
           "reference": reference, "generation": gen, "rouge_l_recall": rouge_l_recall(gen, reference)}
    if q.choices:
        row["choice"] = parse_choice(gen, q.choices)
        row["correct"] = row["choice"] == q.label
    if q.fact:
        row["fact_recalled"] = q.fact.lower() in gen.lower()
    return row


def evaluate(patient: Patient, task: Task, cfg) -> tuple[dict[str, float], list[dict]]:
    """Forget / retain metrics of `task` and utility perplexity. Returns (metrics, per-sample records).

    Free-text tasks give F-RL / R-RL (ROUGE-L recall); multiple-choice tasks give Acc_f / Acc_r in percent.
    """
    if task.scoring not in SCORINGS:
        raise ValueError(f"task {task.name!r} has scoring {task.scoring!r}; valid choices: {', '.join(SCORINGS)}")
    validate_eval(cfg)

    def pick(items: Sequence[QA]) -> list[QA]:
        return _limited(items, cfg)

    records: list[dict] = []
    metrics: dict[str, float] = {}
    para_items, _ = paraphrased(cfg, task.forget)  # none: no *_paraphrase metric (it would repeat the plain one)
    for side, split, items, para in (("f", "forget", pick(task.forget), False),
                                     ("r", "retain", pick(task.retain), False),
                                     ("f", "forget_paraphrase", para_items, True)):
        if para and not items:
            continue
        rows = score_split(patient, items, split, cfg, paraphrase=para)
        records += rows
        suffix = "_paraphrase" if para else ""
        if task.scoring == "choice":
            metrics[f"acc_{side}{suffix}"] = 100.0 * sum(r["correct"] for r in rows) / max(len(rows), 1)
        else:
            metrics[f"{side}_rl{suffix}"] = sum(r["rouge_l_recall"] for r in rows) / max(len(rows), 1)
        facts = [r["fact_recalled"] for r in rows if "fact_recalled" in r]
        if facts:  # ROUGE-L credits the answer's template words too; this counts only the fact itself
            metrics[f"{side}_fact{suffix}"] = 100.0 * sum(facts) / len(facts)
    if cfg.get("loglik") and task.scoring == "choice":
        acc = choice_loglik_accuracy(patient, {"f": pick(task.forget), "r": pick(task.retain)}, int(cfg.batch_size))
        metrics |= {f"acc_{side}_loglik": value for side, value in acc.items()}
    if cfg.get("ppl", True) and task.corpus:
        metrics["ppl"] = perplexity(patient.model, patient.tokenizer, task.corpus)
    return metrics, records


def utility_benchmarks(patient: Patient, cfg) -> dict[str, float]:
    """Optional lm-eval tasks (`eval.lm_eval.tasks`), flattened to `lm_eval/<task>/<metric>`."""
    spec = cfg.get("lm_eval") or {}
    if not spec.get("tasks"):
        return {}
    results = run_lm_eval(patient, list(spec["tasks"]), spec.get("include_path"), int(cfg.batch_size),
                          spec.get("limit"))
    return {f"lm_eval/{task}/{metric.split(',')[0]}": float(value) for task, scores in results.items()
            for metric, value in scores.items() if "," in metric and "stderr" not in metric
            and isinstance(value, (int, float))}  # lm-eval keys metrics as "<metric>,<filter>"
