"""Holes found by probing (issue #14): patch stacking and patch files, the results.json contract (resume, collect,
robustness), stale cache temporaries, BOM-marked MMLU files, and generated docs that name no machine's folders."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from experiments import tables
from experiments.collect import load_results, load_runs
from experiments.robustness import load_robustness, write_robustness
from repair.io import cached_dir
from repair.patches import Delta, Patch, PatchConflict
from repair.resume import completed_results
from repair.tasks.adapters import load_jsonl_qa, load_mmlu


# ------------------------------------------------------------------------------------------------ patches
def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))


def _patch(parameter: str, shape: tuple[int, int], scale: float, rank: int = 2) -> Patch:
    g = torch.Generator().manual_seed(int(scale * 100))
    return Patch([Delta(parameter, scale * torch.randn(shape[0], rank, generator=g),
                        torch.randn(rank, shape[1], generator=g))])


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _same(model, weights) -> bool:
    return all(torch.equal(p, weights[k]) for k, p in model.named_parameters())


def test_revert_refuses_out_of_order_and_newest_first_restores_pristine():
    model = _model()
    pristine = _weights(model)
    a, b = _patch("0.weight", (5, 6), 0.1), _patch("0.weight", (5, 6), 0.3)
    a.apply(model)
    b.apply(model)
    both = _weights(model)
    with pytest.raises(PatchConflict) as err:
        a.revert(model)  # would wipe out b and leave neither pristine nor b
    assert "0.weight" in str(err.value) and "reverse order of application, newest first" in str(err.value)
    assert _same(model, both) and a.applied  # refused: nothing changed, a can still be reverted in order
    b.revert(model)
    a.revert(model)
    assert _same(model, pristine)  # bit for bit


def test_replace_gives_the_weights_of_revert_then_apply_and_keeps_the_old_patch_when_rejected():
    """The calibration's swap: the same weights bit for bit as revert + apply, the originals carried over (revert
    restores pristine), and a replacement past the norm bound leaves the old patch applied."""
    from repair.patches import PatchRejected

    model = _model()
    pristine = _weights(model)
    a, b = _patch("0.weight", (5, 6), 0.1), _patch("0.weight", (5, 6), 0.3)
    b_again = Patch(list(b.deltas), dict(b.provenance))
    b.apply(model)
    expected = _weights(model)
    b.revert(model)
    a.apply(model)
    applied = a.replace(model, b_again)
    assert applied is b_again and not a.applied and _same(model, expected)
    huge = Patch([Delta("0.weight", d.left * 1e6, d.right) for d in b.deltas])
    with pytest.raises(PatchRejected):
        applied.replace(model, huge, max_relative_norm=2.0)
    assert applied.applied and _same(model, expected)
    applied.revert(model)
    assert _same(model, pristine)
    # the norm bound is judged against the weight as it was, not the patched one (as revert + apply judge it)
    big, bound = _patch("0.weight", (5, 6), 5.0), 1.5
    weight_norm = float(model[0].weight.detach().norm())
    assert b.deltas[0].norm() / weight_norm > bound
    big.apply(model)
    assert b.deltas[0].norm() / float(model[0].weight.detach().norm()) < bound  # the patched weight would let it through
    with pytest.raises(PatchRejected):
        big.replace(model, Patch(list(b.deltas)), max_relative_norm=bound)
    big.revert(model)
    assert _same(model, pristine)


def test_revert_allows_independent_patches_in_any_order_and_refuses_after_edits():
    model = _model()
    pristine = _weights(model)
    a, b = _patch("0.weight", (5, 6), 0.1), _patch("1.weight", (4, 5), 0.2)
    a.apply(model)
    b.apply(model)
    a.revert(model)  # b touches another weight: reverting a first is safe
    b.revert(model)
    assert _same(model, pristine)
    a.apply(model)
    with torch.no_grad():
        dict(model.named_parameters())["0.weight"][0, 0] += 1e-3  # e.g. a training step after the patch
    with pytest.raises(PatchConflict, match="0.weight changed since this patch was applied"):
        a.revert(model)
    # the same patch reverted and applied again (STAMP's rescaling, the reversion attack) still works
    b.apply(model)
    b.revert(model)
    b.apply(model)
    b.revert(model)


def test_patch_with_two_deltas_on_one_weight_reverts_to_pristine():
    model = _model()
    pristine = _weights(model)
    one, two = _patch("0.weight", (5, 6), 0.1).deltas[0], _patch("0.weight", (5, 6), 0.2).deltas[0]
    patch = Patch([one, two])
    patch.apply(model)
    assert not _same(model, pristine)
    patch.revert(model)
    assert _same(model, pristine)


def test_patch_load_rejects_a_file_without_metadata(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError) as err:
        Patch.load(path)
    assert str(path) in str(err.value) and "not a RePAIR patch" in str(err.value) and "'parameters'" in str(err.value)


@pytest.mark.parametrize("names", [["0.weight"], ["0.weight", "1.weight", "0.bias"]], ids=["shorter", "longer"])
def test_patch_load_rejects_names_that_do_not_match_the_tensors(tmp_path, names):
    good = tmp_path / "good.safetensors"
    Patch([_patch("0.weight", (5, 6), 0.1).deltas[0], _patch("1.weight", (4, 5), 0.2).deltas[0]]).save(good)
    assert [d.parameter for d in Patch.load(good).deltas] == ["0.weight", "1.weight"]  # the real thing loads
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta | {"parameters": json.dumps(names)})
    with pytest.raises(ValueError) as err:
        Patch.load(bad)
    assert str(bad) in str(err.value) and f"names {len(names)} parameters" in str(err.value)
    assert "4 tensors (2 left/right pairs)" in str(err.value)


# ------------------------------------------------------------------------------------------------ results.json
def _results(method="ga", task="pii", patient="tiny", seed=0, after=None, group=None, robustness=None) -> dict:
    after = {"f_rl": 0.2, "r_rl": 0.8, "ppl": 7.0} if after is None else after
    config = {"method": {"name": method}, "task": {"name": task}, "patient": {"name": patient}, "seed": seed,
              "implant": {"oracle": False}, "group": group}
    res = {"method": method, "task": task, "patient": patient, "seed": seed,
           "metrics": {"before": {"f_rl": 0.9, "r_rl": 0.9, "ppl": 6.0}, "after": after},
           "runtime_s": {"unlearn": 1.5, "eval": 2}, "config": config}
    return res | ({"robustness": robustness} if robustness else {})


INVALID = {
    "after_null": (lambda r: r["metrics"].__setitem__("after", None), "metrics.after (null"),
    "metric_string": (lambda r: r["metrics"]["after"].__setitem__("ppl", "7.0"), "metrics.after.ppl (str"),
    "metric_bool": (lambda r: r["metrics"]["before"].__setitem__("f_rl", True), "metrics.before.f_rl (bool"),
    "runtime_string": (lambda r: r["runtime_s"].__setitem__("unlearn", "fast"), "runtime_s.unlearn (str"),
    "seed_string": (lambda r: r.__setitem__("seed", "0"), "seed (str"),
    "method_null": (lambda r: r.__setitem__("method", None), "method (null"),
    "metrics_list": (lambda r: r.__setitem__("metrics", []), "metrics (list"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_resume_reruns_a_job_whose_results_break_the_contract(tmp_path, caplog, case):
    res = _results()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    assert completed_results(tmp_path, res["config"]) is not None  # valid: skipped on resume
    res["metrics"]["after"]["acc_f_paraphrase"] = float("nan")  # NaN: not measured, still valid
    res["metrics"]["after"]["ppl"] = float("inf")  # Inf: a broken patient's perplexity, still a measurement
    path.write_text(json.dumps(res))
    assert completed_results(tmp_path, res["config"]) is not None
    corrupt, field = INVALID[case]
    corrupt(res)
    path.write_text(json.dumps(res))
    with caplog.at_level(logging.WARNING):
        assert completed_results(tmp_path, res["config"]) is None
    assert str(path) in caplog.text and field in caplog.text and "running the job again" in caplog.text


def _write(root: Path, folder: str, res: dict, hydra: bool = False) -> Path:
    (root / folder).mkdir(parents=True)
    (root / folder / "results.json").write_text(json.dumps(res))
    if hydra:
        (root / folder / ".hydra").mkdir()
        (root / folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(res["config"]))
    return root / folder / "results.json"


def test_collect_and_tables_skip_invalid_results_with_a_warning(tmp_path, caplog):
    root = tmp_path / "outputs" / "sweeps" / "table2" / "tiny"
    _write(root, "none_pii_s0", _results("none"))
    _write(root, "ga_pii_s0", _results("ga"))
    null_after = _results("ga", seed=1)
    null_after["metrics"]["after"] = None
    bad_null = _write(root, "ga_pii_s1", null_after, hydra=True)  # a gap: its config says which run it was
    text_metric = _results("none", seed=1, after={"f_rl": "0.1", "r_rl": 0.8, "ppl": 7.0})
    bad_text = _write(root, "none_pii_s1", text_metric)  # no .hydra: skipped
    with caplog.at_level(logging.WARNING):
        runs = load_runs(root, expected=False)
        done = load_results(root)
    assert sorted(done["method"] + done["seed"].astype(str)) == ["ga0", "none0"]
    assert list(runs[runs["status"] == "failed"]["seed"]) == [1] and len(runs) == 3
    for path, field in ((bad_null, "metrics.after (null"), (bad_text, "metrics.after.f_rl (str")):
        assert str(path) in caplog.text and field in caplog.text
    result = tables.write_tables(root, tmp_path / "tables")  # used to crash on the null metrics
    md = result["paths"]["md"].read_text()
    assert "failed: GA on pii seed 1" in md and "(ga_pii_s1)" in md  # the gap, named relative to the sweep
    assert str(tmp_path) not in md


def test_robustness_skips_invalid_results(tmp_path, caplog):
    rob = {"prompting": {"metric": "f_rl", "variants": {"plain": {"f_rl": 0.1}}, "worst": {}}}
    _write(tmp_path, "ok", _results(robustness=rob))
    broken = _results(seed=1, robustness=rob)
    broken["metrics"]["after"] = None
    path = _write(tmp_path, "broken", broken)
    with caplog.at_level(logging.WARNING):
        runs = load_robustness(tmp_path)  # used to crash on the null metrics
    assert list(runs["seed"]) == [0] and list(runs["path"]) == ["ok"]
    assert str(path) in caplog.text and "metrics.after (null" in caplog.text


# ------------------------------------------------------------------------------------------------ docs headers
def _robustness_run(res: dict) -> dict:
    after = res["metrics"]["after"]["f_rl"]
    curve = [{"step": 0, "f_rl": after, "fact_nll": 8.0}, {"step": 5, "f_rl": after + 0.3, "fact_nll": 1.0}]
    return res | {"robustness": {
        "prompting": {"metric": "f_rl", "variants": {"plain": {"f_rl": after}, "prefix": {"f_rl": 0.5}},
                      "worst": {"variant": "prefix", "f_rl": 0.5}},
        "mia": {"auc": 0.6, "auc_retain": 0.9, "privleak": 0.1}, "relearn": {"metric": "f_rl", "curve": curve}}}


@pytest.mark.parametrize("layout", ["folders", "group"])
def test_generated_headers_name_recipe_and_patient_never_a_path(tmp_path, layout):
    if layout == "folders":  # recipe from outputs/sweeps/<recipe>/<patient>
        root, group = tmp_path / "outputs" / "sweeps" / "ablation_rank" / "tiny", None
    else:  # a grid run in a temporary folder: recipe from the runs' `group`
        root, group = tmp_path / "grid_new", "ablation_rank"
    for method in ("none", "stamp"):
        _write(root, f"{method}_pii_s0", _robustness_run(_results(method, group=group)))
    out = tmp_path / "docs"
    md = tables.write_tables(root, out, name="ablation_rank")["paths"]["md"].read_text()
    header = md.splitlines()[0]
    assert header == "# ablation_rank — sweep: ablation_rank on tiny, 2 runs"
    write_robustness(root, out)
    rob = (out / "robustness.md").read_text()
    assert rob.splitlines()[0] == "<!-- python -m experiments.robustness — sweep: ablation_rank on tiny, 2 runs -->"
    csv = (out / "robustness.csv").read_text()
    for text in (md, rob, csv):
        assert str(tmp_path) not in text and "grid_new" not in text


# ------------------------------------------------------------------------------------------------ cache
def test_cached_dir_removes_stale_temporaries_of_its_target(tmp_path):
    target = tmp_path / "implants" / "abc123"
    target.parent.mkdir()
    stale_dir = target.parent / ".abc123.k2j4h5g6.tmp"  # what atomic_path(is_dir=True) left after a kill -9
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"\0" * 1024)
    stale_file = target.parent / ".abc123.x7y8z9w0.tmp"
    stale_file.write_text("half")
    other = target.parent / ".abc123.v2.q1w2e3r4.tmp"  # another entry's (abc123.v2) build: not ours to remove
    other.mkdir()
    assert cached_dir(target, lambda tmp: (tmp / "weights").write_text("w")) == target
    assert (target / "weights").read_text() == "w" and (target / "COMPLETE").exists()
    assert not stale_dir.exists() and not stale_file.exists() and other.exists()
    stale_dir.mkdir()  # a complete entry found later still clears what a killed rebuild left
    assert cached_dir(target, lambda tmp: pytest.fail("rebuilt a complete entry")) == target
    assert not stale_dir.exists()


# ------------------------------------------------------------------------------------------------ adapters
def test_mmlu_csv_and_jsonl_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "mmlu" / "test" / "virology_test.csv"
    path.parent.mkdir(parents=True)
    path.write_text("What causes flu?, A virus ,Bacteria,Fungi,Prions, A \nSecond?,a,b,c,d,D\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    items = load_mmlu(str(tmp_path / "mmlu"))
    assert items[0].question == "What causes flu?" and items[0].answer == "A virus" and items[0].label == 0
    assert items[0].choices == ("A virus", "Bacteria", "Fungi", "Prions") and items[1].answer == "d"
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text(json.dumps({"question": "Who?", "answer": "Me"}) + "\n", encoding="utf-8-sig")
    assert [(q.question, q.answer) for q in load_jsonl_qa(str(jsonl))] == [("Who?", "Me")]
