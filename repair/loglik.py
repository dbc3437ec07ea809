"""Log-likelihood scoring through lm-eval, so multiple-choice numbers compare with the ecosystem's.

The task's splits are registered as lm-eval tasks over local JSON files (`dataset_path: json`), in the WMDP/MMLU
style — the question with its options, scored by the log-likelihood of each option letter — but inside the chat
template, as the patient is asked (the letter is the first token of the taught answer `B. text`). Runs offline;
the same bridge runs any other lm-eval task the user names (`eval.lm_eval.tasks`).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

from repair.data import chat_prompt
from repair.patient import Patient
from repair.tasks import QA
from repair.tasks.choice import LETTERS

log = logging.getLogger(__name__)


def _task_yaml(name: str, data_file: Path, n_choices: int) -> str:
    letters = json.dumps(list(LETTERS[:n_choices]))
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data_file))}\n"
            f"test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{{{prompt}}}}\"\ntarget_delimiter: \"\"\n"
            f"doc_to_choice: {letters}\ndoc_to_target: label\n"
            f"metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")


def run_lm_eval(patient: Patient, tasks: Sequence[str], include_path: str | Path | None = None,
                batch_size: int = 16, limit: int | None = None) -> dict:
    """`lm_eval.simple_evaluate` on the live patient object; returns lm-eval's per-task results."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=patient.model, tokenizer=patient.tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, verbosity="WARNING",
                          bootstrap_iters=0)
    return out["results"]


def choice_loglik_accuracy(patient: Patient, splits: dict[str, Sequence[QA]], batch_size: int = 16) -> dict[str, float]:
    """Accuracy (percent) of picking each item's `label` by option log-likelihood, per split."""
    splits = {k: v for k, v in splits.items() if v}
    with tempfile.TemporaryDirectory(prefix="repair-lm-eval-") as tmp:
        names = {}
        for split, items in splits.items():
            data = Path(tmp) / f"{split}.jsonl"
            data.write_text("".join(json.dumps({"prompt": chat_prompt(patient.tokenizer, q.question),
                                                "label": q.label}) + "\n" for q in items))
            names[split] = f"repair_{split}"
            (Path(tmp) / f"{split}.yaml").write_text(_task_yaml(names[split], data, len(items[0].choices)))
        results = run_lm_eval(patient, list(names.values()), include_path=tmp, batch_size=batch_size)
    return {split: 100.0 * float(results[name]["acc,none"]) for split, name in names.items()}
