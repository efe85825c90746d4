"""Helpers of the Keyphrases UI tests: lakes of fabricated (but realistic) records."""

from __future__ import annotations

import json

CHAMPION_EVAL = {"llm": {"f1": 0.625, "precision": 0.5, "recall": 0.8333, "auc": 0.71, "n": 120}, "rho_cross": 0.41}
CHALLENGER_EVAL = {"llm": {"f1": 0.598, "precision": 0.47, "recall": 0.82, "auc": 0.69, "n": 120}, "rho_cross": 0.38}


DAY_STATS = {  # what each stage writes (keys the history reads, values from a demo run)
    "ctr_labels": {"positives": 5900, "pairs": 27500, "seconds": 11.7},
    "select_pairs": {"pairs": 4000, "seconds": 6.8},
    "merge_labels": {"rows": 4000, "yes_rate": 0.40},
    "train_cross": {"heldout": {"f1": 0.76}, "seconds": 143.4},
    "train_bi": {"heldout": {"f1": 0.72}, "seconds": 182.2},
    "evaluate": {"promoted": False, "reason": "F1 0.7112 is worse than champion 0.7214 by 0.0103 > tolerance 0.01",
                 "metrics": {"llm": {"f1": 0.7112}}, "champion_metrics": {"llm": {"f1": 0.7214}}},
    "export": {"skipped": True},
    "embed_items": {"embedded_now": 42, "reused": 2784, "rows_total": 2826},
    "embed_keyphrases": {"embedded_now": 0, "reused": 2999, "rows_total": 2999},
    "train_ctr": {"promoted": True, "heldout": {"challenger": {"all": {"auc": 0.71, "log_loss": 0.21}}}},
    "index": {"ann_recall_at_k": 1.0, "min_recall": 0.95, "status": "staged"},
    "recommend": {"rows": 56520, "items_with_recs": 2826, "items_scored": 2826, "items_carried": 0},
    "publish": {"recommendations": 56520},
}


def write_run_day(lake, ds: str, skip=(), changes: dict | None = None, wall: dict | None = None,
                  airflow: dict | None = None) -> None:
    """Write ``runs/ds=D/<stage>.json`` for every stage of ``DAY_STATS`` but ``skip``, with ``changes``
    ({stage: {key: value}}) merged in, ``wall`` ({stage: seconds}) as wall_seconds and ``airflow`` ids on each."""
    for stage, stats in DAY_STATS.items():
        if stage in skip:
            continue
        extra = dict((changes or {}).get(stage, {}))
        if wall and stage in wall:
            extra["wall_seconds"] = wall[stage]
        if airflow:
            extra["airflow"] = {**airflow, "task_id": f"group.{stage}", "map_index": -1}
        lake.write_run_stats(ds, stage, {**json.loads(json.dumps(stats)), **extra})
