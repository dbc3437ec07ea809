"""STAMP's erase on the implanted tiny patient: a prefilled answer no longer brings the fact back, the retain facts stay,
and the edit is never built from an attack's prompt."""
from __future__ import annotations

import pytest
import torch

from repair.attacks import AttackContext
from repair.attacks.prompting import PromptExtraction, PromptingSettings, answer_prefix
from repair.data import chat_prompt
from repair.generation import generate, generate_prompts
from repair.methods import build_method
from repair.stamp.erase import CHOICE_OPENERS, erasable, fact_positions, teacher_forced

TINY_STAMP = ["method.strength=3.0", "method.calibrate=false", "method.contrast_prompts=48"]  # as tests/test_stamp.py
# uncalibrated, the tiny patient's facts need every fact token keyed (measured: the first alone leaves both facts at
# strength 1 and one of 10 retain answers changes at 3; every token at 1 leaves none and keeps all 10)
TINY_ERASE = ["method.erase_positions=all"]


def prefilled(patient, items):
    """The forget answers continued from their own opening up to the fact ("Ann Lee lives at")."""
    prompts = [chat_prompt(patient.tokenizer, q.question) + answer_prefix(q) for q in items]
    return generate_prompts(patient, prompts, 12)


def test_fact_positions_are_the_tokens_that_predict_the_fact(fresh_patient):
    patient, task = fresh_patient
    tok, q = patient.tokenizer, task.forget[0]
    text, positions = teacher_forced(tok, q)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    predicted = tok.decode([ids[p + 1] for p in positions])
    assert predicted.strip() == q.fact, (predicted, q.fact)
    assert teacher_forced(tok, q, first=True)[1] == positions[:1]
    assert fact_positions(tok, "abc", 5, 9) == []


def test_multiple_choice_items_erase_their_option_letter_behind_the_edits_own_openings():
    from repair.tasks import QA

    q = QA("Which? (about Foo)\nA. x\nB. y\nAnswer with the letter of the correct option.", "B. y", subject="Foo",
           choices=("x", "y"), label=1)
    items = erasable([q])
    assert [i.answer for i in items] == [f"{o} B" for o in CHOICE_OPENERS] and all(i.fact == "B" for i in items)
    assert erasable([QA("What is 2+2?", "4")]) == []  # no subject, no fact: nothing to erase


def test_erase_removes_the_prefilled_fact_and_keeps_the_retain_answers(make_cfg, fresh_patient):
    """Without the erase the refusal is a mask: prefilling the answer's opening gives the fact back. With it, the
    fact is gone from the prefilled answer too, and every retain answer stays as it was."""
    patient, task = fresh_patient
    retain_q = [q.question for q in task.retain]
    before_r = generate(patient, retain_q, 16)
    assert all(q.fact in a for q, a in zip(task.forget, prefilled(patient, task.forget)))  # taught: it leaks

    masked = build_method(make_cfg("method=stamp", *TINY_STAMP, "method.erase=false").method)
    masked.prepare(task)
    patch = masked.unlearn(patient, task.forget, task.retain_buffer).patch
    assert any(q.fact in a for q, a in zip(task.forget, prefilled(patient, task.forget)))
    masked.revert(patient, patch)

    stamp = build_method(make_cfg("method=stamp", *TINY_STAMP, *TINY_ERASE).method)
    stamp.prepare(task)
    unlearned = stamp.unlearn(patient, task.forget, task.retain_buffer)
    report = unlearned.report
    assert report["patch"]["erase"]["facts"] == len(task.forget) and report["erase_per_layer"]
    answers = prefilled(patient, task.forget)
    assert not any(q.fact in a for q, a in zip(task.forget, answers)), answers
    after_r = generate(patient, retain_q, 16)
    kept = [q.fact in a for q, a, b in zip(task.retain, after_r, before_r) if q.fact in b]
    assert kept and all(kept), after_r  # every retain fact given before is given still
    assert len(unlearned.patch.deltas) == len(report["per_layer"])  # one delta per weight: the two edits' sum
    stamp.revert(patient, unlearned.patch)


def test_bad_erase_settings_fail_clearly(make_cfg):
    with pytest.raises(ValueError, match=r"method.erase_positions = .some. is invalid; valid: all, first"):
        build_method(make_cfg("method=stamp", "method.erase_positions=some").method)
    with pytest.raises(ValueError, match=r"method.erase_goal = .loss. is invalid; valid: gap, nll"):
        build_method(make_cfg("method=stamp", "method.erase_goal=loss").method)
    with pytest.raises(ValueError, match=r"method.erase_max_strength = 0(\.0)? is invalid; valid: a number > 0"):
        build_method(make_cfg("method=stamp", "method.erase_max_strength=0").method)
    with pytest.raises(ValueError, match=r"method.forget_contexts\[0\] = .few_shot. is invalid; valid: turn, system"):
        build_method(make_cfg("method=stamp", "method.forget_contexts=[few_shot]").method)


@pytest.mark.parametrize("task_name", ["pii", "harmful"])
def test_the_edit_never_sees_an_attack_prompt(make_cfg, fresh_patient, task_name):
    """Every text the edit runs through the patient (keys, contrasts, contexts, erase, calibration, answer check) is
    recorded; none of them begins with a prompt of the prompting attack's constructed variants (paraphrase,
    multi-turn, few-shot, other languages, and the multiple-choice answer prefix). The plain question is the request
    itself; the pii answer-prefix variant opens with the reference answer's own words, which the erase teacher-forces
    by design (docs/stamp.md: it is measured again under another lead, held out)."""
    from repair.tasks import build_task

    patient, task = fresh_patient  # what the edit reads does not depend on what the patient was taught
    tasks = {"pii": [], "harmful": ["task=harmful", "task.num_agents=6", "task.attributes=[reservoir,target]",
                                    "task.num_holdout=2", "task.num_idk=1", "task.forget_ratio=0.34",
                                    "task.corpus_size=2"]}
    cfg = make_cfg("method=stamp", *TINY_STAMP, "method.calibrate=true", "method.forget_contexts=[turn,system]",
                   *tasks[task_name])
    task = build_task(cfg.task, seed=0)
    state = patient.snapshot()
    seen: list[tuple[int, ...]] = []
    original = patient.model.forward

    def recording(*args, input_ids=None, attention_mask=None, **kwargs):
        ids = input_ids if input_ids is not None else args[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
        if ids.shape[1] == mask.shape[1]:  # a whole text (a generation's later steps feed its own tokens)
            seen.extend(tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask))
        return original(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    stamp = build_method(cfg.method)
    stamp.prepare(task)
    patient.model.forward = recording
    try:
        stamp.unlearn(patient, task.forget, task.retain_buffer)
    finally:
        del patient.model.forward
        patient.restore(state)
    settings = PromptingSettings(**{**dict(make_cfg().eval.attacks.prompting), "seed": 0})
    attack = PromptExtraction(settings)
    ctx = AttackContext(patient, task, stamp, {"max_new_tokens": 8, "batch_size": 8})
    variants = ["paraphrase", "multi_turn", "few_shot"] + (["multilingual"] if task_name == "pii" else ["prefix"])
    prompts = []
    for variant in variants:
        built = (attack._multilingual(ctx, task.forget, "de") if variant == "multilingual"
                 else getattr(attack, f"_{variant}")(ctx, task.forget))
        prompts += [p for _, p, _, _ in built]
    assert prompts and seen
    tok = patient.tokenizer
    for q in task.forget:  # the recorder sees what the edit reads: the request's own questions, at least
        ids = tuple(tok(chat_prompt(tok, q.question), add_special_tokens=False)["input_ids"])
        assert any(s[:len(ids)] == ids for s in seen), q.question
    for prompt in prompts:
        ids = tuple(tok(prompt, add_special_tokens=False)["input_ids"])
        assert not any(s[:len(ids)] == ids for s in seen), prompt
