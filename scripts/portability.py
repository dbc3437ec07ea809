"""Run the test suite under several CPU kernel settings and report every test whose outcome differs.

torch picks its SIMD kernels per CPU (`torch.backends.cpu.get_cpu_capability()`), so float rounding, and anything
trained on a tiny set, differs from machine to machine. `ATEN_CPU_CAPABILITY=default|avx2|avx512` forces a kernel
family, and the thread count changes reduction order: together they reproduce, on one machine, much of what another
CPU would do to the suite. (A machine without AVX-512 cannot emulate AVX-512 rounding; run the script there too.)

    python scripts/portability.py                                # native, avx2, default + 1 thread
    python scripts/portability.py --settings avx2,default --out docs/portability.md -- -m "not slow"

Each setting runs `python -m pytest tests` in a subprocess with its own junit XML; the report lists the outcome of
every test that is not the same under all settings, then per-setting totals and wall times.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("portability")

SETTINGS = {  # name: environment overrides
    "native": {},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
    "default-2t": {"ATEN_CPU_CAPABILITY": "default"},
    "native-1t": {"OMP_NUM_THREADS": "1"},
}


@functools.lru_cache
def capability(setting: str) -> str:
    """The kernel family and thread count torch reports under a setting (asked once per setting: a subprocess)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **SETTINGS[setting]}, capture_output=True,
                         text=True)
    kernels, threads = out.stdout.split() if out.returncode == 0 else ("?", "?")
    return f"{kernels}, {threads} thread{'s' if threads != '1' else ''}"


def outcomes(xml: Path) -> dict[str, str]:
    """test id → passed / failed / error / skipped, from a pytest junit XML."""
    found = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        found[test] = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(kinds[0], "?") \
            if kinds else "passed"
    return found


def run_setting(name: str, pytest_args: list[str], folder: Path) -> tuple[dict[str, str], float, str]:
    env = {**os.environ, **SETTINGS[name]}
    env.setdefault("REPAIR_CACHE", str(folder / f"cache-{name}"))
    xml = folder / f"{name}.xml"
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *pytest_args]
    log.info("%s (%s): %s", name, capability(name), " ".join(cmd[1:]))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    log.info("%s: %s (%.0f s)", name, tail, seconds)
    if not xml.exists():
        raise RuntimeError(f"pytest wrote no report under setting {name!r}: {done.stderr[-2000:]}")
    return outcomes(xml), seconds, tail


def report(results: dict[str, tuple[dict[str, str], float, str]]) -> str:
    names = list(results)
    tests = sorted(set().union(*(r[0] for r in results.values())))
    differing = [t for t in tests if len({results[n][0].get(t, "absent") for n in names}) > 1]
    lines = ["| setting | torch kernels, threads | outcome | wall time |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {capability(n)} | {results[n][2]} | {results[n][1] / 60:.1f} min |"
              for n in names]
    lines += ["", f"Tests whose outcome differs between settings: **{len(differing)}** of {len(tests)}."]
    if differing:
        lines += ["", "| test | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| `{t}` | " + " | ".join(results[n][0].get(t, "absent") for n in names) + " |"
                  for t in differing]
    failing = [t for t in tests if any(results[n][0].get(t) in ("failed", "error") for n in names)]
    if failing:
        lines += ["", "Failing under some setting: " + ", ".join(f"`{t}`" for t in failing)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="native,avx2,default",
                        help=f"comma-separated, of: {', '.join(SETTINGS)}")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SETTINGS]:
        parser.error(f"unknown setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="portability-") as tmp:
        results = {n: run_setting(n, args.pytest_args, Path(tmp)) for n in names}
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if all(o not in ("failed", "error") for r in results.values() for o in r[0].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
