"""STAMP on the implanted tiny patient: forget answers turn into refusals, retain answers stay, edits revert."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from repair.generation import generate
from repair.methods import build_method
from repair.patches import Delta, Patch, PatchRejected
from repair.stamp import full_solve, held_gram, lowrank_solve, refusal_gaps, top_directions
from repair.stamp.keys import References, contrasts, gram_devices, nearest
from repair.stamp.solve import HeldGram
from repair.tasks.refusals import is_refusal

# the tiny patient has 2 layers (both edited) and a 256-wide MLP; measured to refuse at strength 3 with 48 contrasts
# (4 garbles both forget answers), so the calibration is off here and tested on one sample below.
TINY_STAMP = ["method.strength=3.0", "method.calibrate=false", "method.contrast_prompts=48"]
TINY_RANK = {"stamp": [], "stamp_lowrank": ["method.rank=128"]}  # half the tiny MLP's width


def test_lowrank_at_full_rank_equals_full_solve():
    g = torch.Generator().manual_seed(0)
    k_f, k_r, k_c = (torch.randn(n, 48, generator=g, dtype=torch.float64) for n in (5, 20, 40))
    t = torch.randn(5, 16, generator=g, dtype=torch.float64)
    gram = held_gram(k_r, k_c, retain_weight=1.0, lam=1.0)
    left, right = full_solve(k_f, t, gram, eps_scale=1e-2)
    assert left.shape == (16, 5) and right.shape == (5, 48)  # exact rank-n factors, no SVD
    low_left, low_right = lowrank_solve(k_f, t, gram, 1e-2, rank=48)
    assert torch.allclose(low_left @ low_right, left @ right, atol=1e-9)
    small_left, small_right = lowrank_solve(k_f, t, gram, 1e-2, rank=8)
    assert small_left.shape == (16, 5) and small_right.shape == (5, 48)  # one column per forget key, as full_solve
    assert torch.linalg.matrix_rank(small_right.T @ small_right) <= 8  # inside the rank-8 key subspace
    assert Delta("w", left, right).norm() == pytest.approx(float((left @ right).norm()), rel=1e-9)


def test_krylov_basis_brings_the_lowrank_edit_to_the_full_one():
    """The full edit's row space is A⁻¹K_fᵀ; the forget keys' Krylov space under the held Gram approximates it (the
    top held directions do not): at r = 64 of 256 the low-rank edit is within 2% of the full one."""
    g = torch.Generator().manual_seed(0)
    k_f = torch.randn(3, 256, generator=g, dtype=torch.float64)
    k_r = torch.randn(400, 256, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 256, dtype=torch.float64)
    gram = held_gram(k_r, torch.randn(300, 256, generator=g, dtype=torch.float64), 1.0, 1.0)
    t = torch.randn(3, 16, generator=g, dtype=torch.float64)
    full = torch.matmul(*full_solve(k_f, t, gram, 1e-2))

    def error(steps: int) -> float:
        return float((torch.matmul(*lowrank_solve(k_f, t, gram, 1e-2, 64, krylov_steps=steps)) - full).norm()
                     / full.norm())

    assert error(0) > 0.5 and error(16) < 0.02


def test_a_request_joins_the_held_gram_without_a_full_width_copy():
    """A request's contrast keys are kept beside the cached Gram (`HeldGram`): products, trace and STAMP's system
    equal those of the summed Gram, and STAMP-LR solves the same edit as with the summed Gram without ever forming
    an m × m matrix of its own."""
    g = torch.Generator().manual_seed(0)
    k_f, k_r, k_c, extra = (torch.randn(n, 64, generator=g, dtype=torch.float64) for n in (3, 40, 80, 6))
    t = torch.randn(3, 16, generator=g, dtype=torch.float64)
    static = held_gram(k_r, k_c, 1.0, 1.0)
    dense, held = static + extra.T @ extra, HeldGram(static, extra)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(held @ x, dense @ x) and held.trace() == pytest.approx(float(dense.trace()))
    assert torch.allclose(torch.matmul(*full_solve(k_f, t, held, 1e-2)), torch.matmul(*full_solve(k_f, t, dense, 1e-2)))

    class NoFullWidth(HeldGram):
        def plus(self, rows):
            raise AssertionError("STAMP-LR formed a full-width matrix for the request")

    directions = top_directions(static, 16)
    for steps in (0, 2):
        low = torch.matmul(*lowrank_solve(k_f, t, NoFullWidth(static, extra), 1e-2, 16, directions,
                                          krylov_steps=steps))
        assert torch.allclose(low, torch.matmul(*lowrank_solve(k_f, t, dense, 1e-2, 16, directions,
                                                               krylov_steps=steps)), atol=1e-10)


def test_held_grams_stay_on_the_device_within_the_budget():
    """`method.gram_budget_gb`: layers' Grams on the patient's device while they fit, in host memory past it."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    widths = {10: 1000, 11: 1000, 12: 1000}  # 4 MB each in float32, 8 MB in float64
    assert gram_devices(widths, torch.float32, cuda, 0.009) == {10: cuda, 11: cuda, 12: cpu}
    assert gram_devices(widths, torch.float64, cuda, 0.009) == {10: cuda, 11: cpu, 12: cpu}
    assert gram_devices(widths, torch.float32, cuda, None) == {10: cuda, 11: cuda, 12: cuda}
    assert gram_devices(widths, torch.float32, cpu, 0.0) == {10: cpu, 11: cpu, 12: cpu}


def test_gram_summed_batch_by_batch_equals_the_keys_gram(fresh_patient):
    from repair.data import chat_prompt
    from repair.refusal import activations_at, gram_at, token_positions

    patient, task = fresh_patient
    texts = [chat_prompt(patient.tokenizer, q.question) + q.answer for q in task.retain]
    positions = [token_positions(patient.tokenizer, t) for t in texts]
    keys = activations_at(patient, texts, positions, [0, 1], batch_size=3)  # the same batches: the same rounding
    grams, count = gram_at(patient, texts, positions, [0, 1], {0: "cpu", 1: "cpu"}, torch.float64, batch_size=3)
    assert count == sum(map(len, positions)) == len(keys[0][0])
    for layer in (0, 1):
        expected = keys[layer][0].T @ keys[layer][0]
        assert float((grams[layer] - expected).norm() / expected.norm()) < 1e-12


@pytest.mark.parametrize("method", ["stamp", "stamp_lowrank"])
def test_float32_keys_grams_and_solves_give_the_float64_edit(make_cfg, fresh_patient, method):
    """`method.precision`: float32 (the default: half the memory, the GPU's fast path) fits the float64 edit, and
    the held Grams are kept in the precision asked for."""
    from repair.stamp.keys import PRECISIONS

    patient, task = fresh_patient
    edits = {}
    for precision in ("float64", "float32"):
        stamp = build_method(make_cfg(f"method={method}", *TINY_STAMP, *TINY_RANK[method],
                                      f"method.precision={precision}", "method.store_keys=false").method)
        stamp.prepare(task)
        unlearned = stamp.unlearn(patient, task.forget, task.retain_buffer)
        edits[precision] = [d.dense(torch.float64) for d in unlearned.patch.deltas]
        unlearned.patch.revert(patient.model)
        (held,) = [v for k, v in stamp.cache._entries.items() if k.startswith("held-")]
        assert {h["gram"].dtype for h in held.values()} == {PRECISIONS[precision]}
    for full, single in zip(edits["float64"], edits["float32"]):
        assert float((single - full).norm() / full.norm()) < 1e-3


def test_refusal_gap_never_counts_the_answers_own_first_token():
    """"H" opens "Hmm, …" and "Hugo …": a question whose answer already begins with an opener is not refused."""
    logits = torch.tensor([[5.0, 1.0, 0.0, 0.0],    # about to say token 0, an opener
                           [0.0, 4.0, 0.0, 1.0]])   # about to say token 1, not an opener; opener 3 is 3 nats behind
    openers = torch.tensor([0, 3])
    assert refusal_gaps(logits, openers).tolist() == [4.0, -3.0]
    assert refusal_gaps(logits, openers, answers=logits.argmax(-1)).tolist() == [-5.0, -3.0]


def test_neighbour_contrasts_are_the_forget_subjects_look_alikes(make_cfg, fresh_patient):
    """`contrast_neighbours` holds look-alike subjects first ("Nalwexian blight" for "Nalzanian plague"), the rest of
    the contrasts cycle through the pool as before."""
    patient, task = fresh_patient
    pool = ["Torvian rot", "Nalzanian rot", "Quodrian spore", "Nalbreian plague", "Wexfenian mould"]
    assert nearest(patient.tokenizer, "Nalzanian plague", pool)[:2] == ["Nalzanian rot", "Nalbreian plague"]
    stamp = build_method(make_cfg("method=stamp", "method.contrast_prompts=8", "method.contrast_neighbours=0.5").method)
    refs = References(unknown_subjects=[], subject_pool=pool)
    forget = [dataclasses.replace(task.forget[0], question="Who is Nalzanian plague?", subject="Nalzanian plague")]
    texts, _ = contrasts(patient, stamp.settings, forget, refs, frozenset({"Nalzanian plague"}))
    assert len(texts) == 8 and "Nalzanian rot" in texts[0] and "Nalbreian plague" in texts[1]
    assert sum("Torvian rot" in t for t in texts) >= 1 and not any("Nalzanian plague" in t for t in texts)


def test_exact_mapping_is_approximate_and_measured():
    """The ridge solve maps forget keys close to, not exactly onto, their targets (the disputed 'Eq. 6')."""
    g = torch.Generator().manual_seed(1)
    k_f = torch.randn(3, 32, generator=g, dtype=torch.float64)
    t = torch.randn(3, 8, generator=g, dtype=torch.float64)
    for eps_scale, bound in ((1e-8, 1e-6), (1e-1, 1.0)):
        left, right = full_solve(k_f, t, held_gram(k_f[:0], k_f[:0], 1.0, 0.0), eps_scale)
        residual = float((k_f @ (left @ right).T - t).norm() / t.norm())
        assert residual < bound
    assert residual > 1e-3  # a real ridge leaves a residual


def test_nan_or_huge_edits_are_refused_and_leave_the_model_unchanged(fresh_patient):
    patient, _ = fresh_patient
    param = "model.layers.0.mlp.down_proj.weight"
    before = dict(patient.model.named_parameters())[param].detach().clone()
    shape = before.shape
    nan = Patch([Delta(param, torch.full((shape[0], 1), float("nan")), torch.ones(1, shape[1]))])
    with pytest.raises(PatchRejected, match="NaN or Inf"):
        nan.apply(patient.model)
    huge = Patch([Delta(param, torch.full((shape[0], 1), 100.0), torch.ones(1, shape[1]))])
    with pytest.raises(PatchRejected, match="above|bound"):
        huge.apply(patient.model, max_relative_norm=2.0)
    assert torch.equal(dict(patient.model.named_parameters())[param], before)


@pytest.mark.parametrize("method", ["stamp", "stamp_lowrank"])
def test_stamp_edit_maps_forget_keys_holds_retain_keys_and_reverts_exactly(make_cfg, fresh_patient, method, tmp_path):
    """The edit's contract on a real (tiny) model: forget keys reach their targets, retain keys stay, and the patch
    reverts bit for bit and reloads."""
    patient, task = fresh_patient
    cfg = make_cfg(f"method={method}", "method.layers=[1]", "method.strength=1.0", "method.contrast_prompts=0",
                   "method.calibrate=false", "method.erase=false",  # the plain question's own mapping
                   "method.forget_contexts=[]",  # (contexts and erase: tests/test_stamp_erase.py)
                   "method.cov_weight=0.001", "method.eps=1e-6",  # generic keys loosely held: (nearly) exact
                   *(["method.rank=1000"] if method == "stamp_lowrank" else []))  # above the tiny MLP's width 256:
    # solved (and recorded) at rank 256
    stamp = build_method(cfg.method)
    stamp.prepare(task)
    state = patient.snapshot()
    unlearned = stamp.unlearn(patient, task.forget, task.retain_buffer)
    report, patch = unlearned.report, unlearned.patch
    layer = report["per_layer"][1]
    assert set(report["per_layer"]) == {1}
    assert layer["forget_residual"] < 0.05 and layer["retain_shift"] < 0.05, layer
    assert 0 < layer["relative_norm"] < 2
    changed = [n for n, t in patient.model.state_dict().items() if not torch.equal(t, state[n])]
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    forget_q = [q.question for q in task.forget]
    edited = generate(patient, forget_q, max_new_tokens=12)

    patch.save(tmp_path / "patch.safetensors")
    stamp.revert(patient, patch)
    for name, tensor in patient.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name  # bit for bit
    reloaded = Patch.load(tmp_path / "patch.safetensors")
    reloaded.apply(patient.model)
    assert generate(patient, forget_q, max_new_tokens=12) == edited
    assert reloaded.provenance["method"] == method and reloaded.provenance["layers"] == [1]
    if method == "stamp_lowrank":  # the effective rank, not the one asked for
        assert reloaded.provenance["rank"] == 256 and reloaded.provenance["rank_requested"] == 1000
    reloaded.revert(patient.model)


def test_bad_stamp_configs_fail_clearly(make_cfg, fresh_patient):
    patient, task = fresh_patient
    with pytest.raises(ValueError, match=r"method.target = .nope. is invalid; valid: refusal_readout, refusal, unk"):
        build_method(make_cfg("method=stamp", "method.target=nope").method)
    with pytest.raises(ValueError, match=r"method.keys = .name. is invalid; valid: answer_start, subject"):
        build_method(make_cfg("method=stamp", "method.keys=name").method)
    with pytest.raises(ValueError, match=r"refusal_readout goes with method.keys=answer_start"):
        build_method(make_cfg("method=stamp", "method.target=unknown").method)
    with pytest.raises(ValueError, match=r"method.contrast_source = .retain. is invalid; valid: forget, buffer"):
        build_method(make_cfg("method=stamp", "method.contrast_source=retain").method)
    with pytest.raises(ValueError, match=r"method.precision = .float16. is invalid; valid: float32, float64"):
        build_method(make_cfg("method=stamp", "method.precision=float16").method)
    with pytest.raises(ValueError, match=r"method.gram_budget_gb = -1(\.0)? is invalid; valid: null"):
        build_method(make_cfg("method=stamp", "method.gram_budget_gb=-1").method)
    with pytest.raises(ValueError, match=r"method.rank = 0 is invalid; valid: an integer >= 1"):
        build_method(make_cfg("method=stamp_lowrank", "method.rank=0").method)
    with pytest.raises(ValueError, match=r"method has unknown setting\(s\) \['strenght'\]; valid: name, keys, target"):
        build_method(make_cfg("method=stamp", "+method.strenght=3").method)  # a misspelling never passes silently
    with pytest.raises(ValueError, match=r"method.strength = 'strong' is invalid; valid: a number"):
        build_method(make_cfg("method=stamp", "method.strength=strong").method)
    with pytest.raises(ValueError, match=r"method lacks setting\(s\) \['krylov_steps', 'rank'\]"):
        build_method({**make_cfg("method=stamp").method, "name": "stamp_lowrank"})  # no silent code default
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \[9\]; valid: 0..1"):
        build_method(make_cfg("method=stamp", "method.layers=[9]").method).unlearn(patient, task.forget, [])


@pytest.mark.parametrize("method", ["stamp", "stamp_lowrank"])
def test_stamp_turns_forget_answers_into_refusals_and_keeps_retain_answers(make_cfg, fresh_patient, method):
    """The behaviour that matters, on the implanted tiny patient: the forget questions are now refused (their
    paraphrases keep no forget fact), every retain answer is the same as before, and revert brings the answers back."""
    patient, task = fresh_patient
    forget_q = [q.question for q in task.forget]
    para_q = [q.paraphrases[0] for q in task.forget]
    retain_q = [q.question for q in task.retain]
    before_f, before_r = generate(patient, forget_q, 16), generate(patient, retain_q, 16)
    assert not any(map(is_refusal, before_f))
    stamp = build_method(make_cfg(f"method={method}", *TINY_STAMP, *TINY_RANK[method]).method)
    stamp.prepare(task)
    patch = stamp.unlearn(patient, task.forget, task.retain_buffer).patch
    after_f = generate(patient, forget_q, 16)
    assert all(map(is_refusal, after_f)), after_f
    para = generate(patient, para_q, 16)  # the tiny model's refusals there are mangled; the facts must be gone
    assert not any(q.fact.lower() in a.lower() for q, a in zip(task.forget, para)), para
    assert generate(patient, retain_q, 16) == before_r
    stamp.revert(patient, patch)
    assert generate(patient, forget_q, 16) == before_f


def test_single_forget_sample_is_refused_alone(make_cfg, fresh_patient):
    """One forget question: that question is refused; the same person's other question and all retain answers are
    measured, and every retain answer stays as it was."""
    patient, task = fresh_patient
    retain_q = [q.question for q in task.retain]
    before_r = generate(patient, retain_q, 16)
    stamp = build_method(make_cfg("method=stamp", *TINY_STAMP, "method.calibrate=true").method)
    stamp.prepare(task)
    stamp.unlearn(patient, task.forget[:1], task.retain_buffer)
    assert is_refusal(generate(patient, [task.forget[0].question], 16)[0])
    assert generate(patient, retain_q, 16) == before_r


def test_calibration_finds_the_strength_that_refuses(make_cfg, fresh_patient):
    """Started too weak, the calibration raises the strength (secant steps on the refusal logit gap, no new solve)
    until the forget questions open with a refusal, and the retain answers stay; without it, the weak edit leaves
    the forget answers as they were."""
    patient, task = fresh_patient
    retain_q, forget, forget_q = [q.question for q in task.retain], task.forget[:1], [task.forget[0].question]
    before_r, before_f = generate(patient, retain_q, 16), generate(patient, forget_q, 16)
    weak = [*TINY_STAMP, "method.strength=0.5"]
    plain = build_method(make_cfg("method=stamp", *weak).method)
    plain.prepare(task)
    weak_patch = plain.unlearn(patient, forget, task.retain_buffer).patch
    assert generate(patient, forget_q, 16) == before_f
    plain.revert(patient, weak_patch)

    stamp = build_method(make_cfg("method=stamp", *weak, "method.calibrate=true").method)
    stamp.prepare(task)
    unlearned = stamp.unlearn(patient, forget, task.retain_buffer)
    report = unlearned.report
    steps = report["calibration"]
    assert len(steps) >= 2 and steps[0]["strength"] == 0.5 and report["patch"]["strength"] > 0.5, steps
    assert max(s.get("refusal_gap", -1e9) for s in steps) > steps[0]["refusal_gap"], steps
    assert all(map(is_refusal, generate(patient, forget_q, 16)))
    assert generate(patient, retain_q, 16) == before_r
    stamp.revert(patient, unlearned.patch)


def test_layer_selection_by_separation_reports_every_candidate(make_cfg, fresh_patient):
    """`layer_selection=separation` ranks layers by forget/refusal separation (the paper's Fig. 5) and logs all."""
    patient, task = fresh_patient
    stamp = build_method(make_cfg("method=stamp", "method.layer_selection=separation", "method.num_layers=1",
                                  "method.num_refusals=16").method)
    stamp.prepare(task)
    report = stamp.unlearn(patient, task.forget, task.retain_buffer).report
    assert set(report["separation"]) == {0, 1}
    assert report["layers"] == [max(report["separation"], key=report["separation"].get)]


def test_contrasts_vary_subjects_and_options_but_never_name_a_forget_subject(make_cfg, fresh_patient):
    """Multiple-choice contrasts: the forget questions' templates about many other subjects, with options re-drawn
    from the same attribute, so the held keys vary the way retain questions do (docs/stamp.md)."""
    from repair.tasks import build_task

    patient, _ = fresh_patient
    cfg = make_cfg("method=stamp", "task=harmful", "method.contrast_prompts=60")
    task = build_task(cfg.task, 0)
    stamp = build_method(cfg.method)
    stamp.prepare(task)
    texts, positions = contrasts(patient, stamp.settings, task.forget, stamp.refs,
                                 frozenset(q.subject for q in task.forget))
    assert len(texts) == 60 and all(len(p) == 1 for p in positions)
    assert not any(q.subject in t for q in task.forget for t in texts)
    pool = stamp.refs.unknown_subjects + [q.subject for q in task.retain_buffer]
    subjects = {s for s in pool if any(s in t for t in texts)}
    assert len(subjects) >= min(4, len(set(stamp.refs.unknown_subjects))), subjects
    originals = {q.question.split("\n", 1)[1] for q in task.forget}  # the options block and instruction
    redrawn = [t for t in texts if t.split("<|im_start|>user\n")[-1].split("\n", 1)[1].split("<|im_end|>")[0]
               not in originals]
    assert len(redrawn) > len(texts) // 2


def test_a_question_form_gets_the_same_contrasts_in_every_request(make_cfg, fresh_patient):
    """A one-question request's contrasts depend on the question's form, not on who it is about: a chat's second
    "Where does X live?" reuses the first one's contrast keys (KeyCache)."""
    patient, task = fresh_patient
    stamp = build_method(make_cfg("method=stamp", "method.contrast_prompts=12").method)
    stamp.prepare(task)
    first = task.forget[0]
    other = "Ottilie Brandvold"
    second = dataclasses.replace(first, question=first.question.replace(first.subject, other), subject=other)

    def texts(request):
        return contrasts(patient, stamp.settings, request, stamp.refs,
                         frozenset(q.subject for q in request))[0]

    alone = texts([first])
    assert len(alone) == 12 and alone == texts([second])
    assert not any(first.subject in t or other in t for t in alone)


def test_key_store_serves_a_later_run_bit_for_bit_and_never_keys_of_other_weights(make_cfg, fresh_patient, tmp_path,
                                                                                   caplog):
    """What STAMP computes that does not depend on the request is stored on disk per weight digest: a new process
    (memory cleared) reads it and fits the same edit bit for bit; an entry built while the weights changed is not
    written; an unreadable entry is recomputed."""
    from repair.stamp import keys

    patient, task = fresh_patient
    patient.cache_dir, cache_dir = tmp_path, patient.cache_dir
    try:
        cfg = make_cfg("method=stamp", *TINY_STAMP)
        factors, counts = [], []
        for _ in range(2):
            stamp = build_method(cfg.method)  # a new method: its memory is empty, as in a new process
            stamp.prepare(task)
            unlearned = stamp.unlearn(patient, task.forget, task.retain_buffer)
            factors.append([t.clone() for d in unlearned.patch.deltas for t in (d.left, d.right)])
            counts.append(unlearned.report["key_cache"])
            unlearned.patch.revert(patient.model)
        assert counts[0]["held"]["computed"] == 1 and counts[0]["contrast"]["computed"] == 48
        stored = torch.load(next((tmp_path / "stamp_keys").glob("*/contrast/*.pt")), weights_only=True)
        for k, v in stored.values():  # each prompt's file holds its own rows, not the batch they were computed in
            assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in (k, v))
        assert counts[1]["held"] == {"memory": 0, "disk": 1, "computed": 0}
        assert counts[1]["contrast"] == {"memory": 0, "disk": 48, "computed": 0}
        assert all(torch.equal(a, b) for a, b in zip(*factors))

        cache, weight = keys.KeyCache(), patient.module("mlp_down", 0).weight
        original = weight.detach().clone()

        def build_while_editing():
            with torch.no_grad():
                weight.add_(1.0)
            return torch.ones(3)

        cache.get("probe", patient, [0], {"n": 1}, build_while_editing)
        with torch.no_grad():
            weight.copy_(original)
        folder = cache._folder(patient)
        assert not list(folder.glob("probe-*.pt"))  # computed on other weights than the digested ones: not stored
        cache.reset()  # the next request, on the digested weights again: written
        cache.get("probe", patient, [0], {"n": 2}, lambda: torch.ones(3))
        (stored,) = folder.glob("probe-*.pt")
        stored.write_bytes(b"not a tensor")
        assert torch.equal(keys.KeyCache().get("probe", patient, [0], {"n": 2}, lambda: torch.zeros(3)), torch.zeros(3))
        assert "unreadable key store entry" in caplog.text
        assert torch.equal(torch.load(stored, weights_only=True), torch.zeros(3))  # replaced by the recomputed one
    finally:
        patient.cache_dir = cache_dir


def test_calibration_passes_replay_the_unedited_layers_bit_for_bit(fresh_patient):
    """The calibration edits only layers from the first edited one up: replaying what the layers below output on
    the unedited patient gives the logits of a whole pass, bit for bit, after the upper layer changed."""
    from repair.data import chat_prompt
    from repair.stamp.calibrate import LowerLayers, last_logits

    patient, task = fresh_patient
    texts = [chat_prompt(patient.tokenizer, q.question) for q in [*task.forget, *task.retain_buffer]]
    lower = LowerLayers.of(patient, 1)
    before = last_logits(patient, texts, batch_size=3, keep=lower)
    assert len(lower.outputs) == -(-len(texts) // 3)  # one per batch
    with torch.no_grad():
        patient.module("mlp_down", 1).weight.mul_(1.5)
    replayed = last_logits(patient, texts, batch_size=3, replay=lower)
    assert torch.equal(replayed, last_logits(patient, texts, batch_size=3))
    assert not torch.equal(replayed, before)
    assert all(type(m).__name__ != "_Replay" for m in patient.model.model.layers)  # the layers are back
    assert LowerLayers.of(patient, 0) is None  # the first layer edited: nothing to replay
