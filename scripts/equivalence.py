"""Did a refactor change any number? Run a fixed set of configs and write every number they record; compare two such
files exactly.

    python scripts/equivalence.py --out before.json [--default]      # on the old tree
    python scripts/equivalence.py --out after.json [--default]       # on the new tree
    python scripts/equivalence.py --compare before.json after.json

The set: every method × pii, harmful and misinformation on the tiny patient (short settings, as tests/test_matrix.py),
the attack suite after STAMP, and (`--default`) STAMP, STAMP-LR and GA on pii with the default patient (not
implanted, 8 scored items per split). Recorded: before/after metrics, the unlearning report's numbers and the attacks' numbers, without wall
times. Same machine, same kernel setting: equal to the last bit, or the refactor changed behaviour.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("equivalence")
TINY_TASKS = {"pii": ["task.num_profiles=6", "task.attributes=[address,phone]", "task.num_idk=2",
                      "task.num_holdout=2", "task.corpus_size=4"],
              "harmful": ["task.num_agents=4", "task.num_holdout=1", "task.num_idk=1",
                          "task.attributes=[reservoir,target]", "task.corpus_size=2"],
              "misinformation": ["task.num_facts=6", "task.num_holdout=1", "task.num_idk=1", "task.corpus_size=2"]}
SHORT = ["patient=tiny", "eval.max_new_tokens=12"]  # the tiny implant recipe in full: facts learned
METHOD_SHORT = {"training": ["method.max_steps=3", "method.batch_size=4"],
                "stamp": ["method.contrast_prompts=8", "method.calibrate_steps=2", "method.calibrate_checks=1",
                          "method.check_tokens=8"]}
TIMES = {"seconds", "timings_s", "runtime_s", "unlearn_s", "phases", "elapsed_s", "time_s", "train_seconds",
         "train_cpu_seconds", "memory", "applied_at"}  # wall clocks, memory, timestamps
VOLATILE = TIMES | {"key", "cached"}  # the implant's cache entry: its key hashes the recipe's spelling


def jobs(default: bool) -> dict[str, list[str]]:
    methods = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    out = {}
    for task, extra in TINY_TASKS.items():
        for method in methods:
            kind = "stamp" if method.startswith("stamp") else "none" if method == "none" else "training"
            tiny = ["method.layer=1"] if method == "rmu" else []
            out[f"tiny/{task}/{method}"] = [f"task={task}", f"method={method}", *SHORT, *extra,
                                            *METHOD_SHORT.get(kind, []), *tiny]
    out["tiny/pii/stamp+attacks"] = [*out["tiny/pii/stamp"], "eval/attacks=all",
                                     "eval.attacks.relearn.steps=[0,2]"]
    if default:
        for method in ("stamp", "stamp_lowrank", "ga"):  # the implant is checked on the tiny patient; here the
            # untaught default patient keeps it minutes, and STAMP's keys, solve and calibration run at real width
            out[f"default/pii/{method}"] = ["task=pii", f"method={method}", "implant=none", "eval.max_samples=8"]
    return out


def numbers(value, skip=TIMES):
    """The numbers (and strings, booleans) of a nested report, without wall times."""
    if isinstance(value, dict):
        return {k: numbers(v, skip) for k, v in value.items() if k not in skip}
    if isinstance(value, list):
        return [numbers(v, skip) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def record(out: Path, default: bool, only: str | None) -> None:
    from hydra import compose, initialize_config_dir

    from repair.runner import run

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in jobs(default).items():
            if only and only not in name:
                continue
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=["logger=none", *overrides])
            log.info("%s", name)
            r = run(cfg, Path(tmp) / name.replace("/", "_"))
            results[name] = numbers({k: r.get(k) for k in ("metrics", "unlearn", "robustness", "implant")})
    out.write_text(json.dumps(results, indent=1, sort_keys=True, default=str))


def diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield f"{path}/{k}: only in {'after' if k in b else 'before'}"
            else:
                yield from diff(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r} -> {b!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--default", action="store_true", help="also the default patient's pii runs (implant: minutes)")
    parser.add_argument("--only", help="only the jobs whose name contains this")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.compare:
        before, after = (numbers(json.loads(p.read_text()), VOLATILE) for p in args.compare)
        changes = list(diff(before, after))
        for line in changes:
            print(line)
        print(f"{len(changes)} difference(s) over {len(set(before) & set(after))} common runs")
        sys.exit(1 if changes else 0)
    if not args.out:
        parser.error("--out or --compare is required")
    record(args.out, args.default, args.only)


if __name__ == "__main__":
    main()
