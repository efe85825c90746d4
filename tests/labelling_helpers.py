"""Hand-made pairs and a deterministic counting judge for the labelling tests (no Spark needed)."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.labels.judges.base import Judge
from keyphrase_pipeline.labels.store import pair_keys
from keyphrase_pipeline.stages.select_pairs import _write_shards

MODEL = "fake-judge-v1"


class CountingJudge(Judge):
    """A real Judge subclass with a deterministic rule (P(yes) from a checksum of the keyphrase) that counts
    its calls and can crash after ``fail_after`` calls, like a killed worker."""

    name = "fake"
    model = MODEL

    def __init__(self, settings, fail_after: int | None = None):
        super().__init__(settings)
        self.calls = 0
        self.scored = 0
        self.fail_after = fail_after

    def score(self, pairs) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("worker killed")
        self.calls += 1
        self.scored += len(pairs)
        return np.array([(zlib.crc32(str(k).encode()) % 1000) / 999.0 for k in pairs["keyphrase"]])

    def score_prompts(self, prompts):  # pragma: no cover - score() is overridden
        raise NotImplementedError


def make_pairs(n: int, start: int = 0) -> pd.DataFrame:
    i = np.arange(start, start + n)
    return pd.DataFrame({
        "item_id": (i // 5).astype("int64"),
        "keyphrase_id": i.astype("int64"),
        "title": [f"item {x // 5} title" for x in i],
        "category": ["Cat A" if x % 2 else "Cat B" for x in i],
        "keyphrase": [f"keyphrase {x}" for x in i],
        "source": [("ctr_positive", "random", "hard_negative")[x % 3] for x in i],
    })


def write_pairs(settings, ds: str, pairs: pd.DataFrame, shard_size: int, run_id: str = "r1") -> list[int]:
    """Write shards exactly as select-pairs does (same writer), keyed for the fake judge."""
    pdf = pairs.copy()
    pdf["pair_key"] = pair_keys(pdf, MODEL, settings.judge.prompt_version)
    n_shards = -(-len(pdf) // shard_size)
    pdf["shard"] = (np.arange(len(pdf)) % n_shards).astype("int32")
    shards = list(range(n_shards))
    stats = {"ds": ds, "run_id": run_id, "shards": shards, "shard_sizes": [int((pdf.shard == s).sum()) for s in shards],
             "selected": {}, "judge_model": MODEL, "prompt_version": settings.judge.prompt_version}
    _write_shards(Lake.from_settings(settings), ds, pdf, shards, stats)
    return shards
