"""Read every results.json below a folder into one pandas table (one row per run, metrics flattened)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def load_results(root: str | Path) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            res = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            log.warning("skipping unreadable %s: %s", path, err)
            continue
        row = {k: res.get(k) for k in ("method", "task", "patient", "seed")}
        row["oracle"] = bool(res.get("config", {}).get("implant", {}).get("oracle", False))
        for stage, metrics in res.get("metrics", {}).items():
            row |= {f"{stage}/{k}": v for k, v in metrics.items()}
        row |= {f"runtime_s/{k}": v for k, v in res.get("runtime_s", {}).items()}
        implant = res.get("implant", {})
        row |= {"implant/cached": implant.get("cached"), "implant/ppl_before": implant.get("ppl_before"),
                "implant/ppl_after": implant.get("ppl_after"), "implant/train_seconds": implant.get("train_seconds"),
                "peak_rss_mb": res.get("peak_rss_mb"), "path": str(path.parent)}
        rows.append(row)
    return pd.DataFrame(rows)
