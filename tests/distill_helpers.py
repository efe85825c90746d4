"""Test data for the distillation tests: labelled pairs whose relevance a model must LEARN.

A title names its product with one word ("sneakers"), a relevant keyphrase with a synonym ("running
shoes") and no shared token; an irrelevant keyphrase names another product but shares the item's
colour word. So an untrained (random) encoder, which mostly measures token overlap, ranks pairs
badly, and a trained one can do well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SYNONYMS = [("sneakers", "running shoes", "shoes"), ("phone", "mobile handset", "electronics"),
            ("laptop", "notebook computer", "computers"), ("jacket", "winter coat", "clothing"),
            ("sofa", "couch", "furniture"), ("watch", "wrist timepiece", "jewellery"),
            ("backpack", "rucksack", "bags"), ("kettle", "tea boiler", "kitchen")]
COLOURS = ["red", "blue", "green", "black", "white", "pink"]
BRANDS = ["acme", "zenit", "orbis", "lumo", "kato"]


def make_pairs(n: int = 240, seed: int = 0, with_ids: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        t = int(rng.integers(len(SYNONYMS)))
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        brand = BRANDS[int(rng.integers(len(BRANDS)))]
        word, syn, cat = SYNONYMS[t]
        title = f"{brand} {word} model {int(rng.integers(100, 999))}"
        if i % 2 == 0:
            kp, label = syn, 1
        else:
            other = SYNONYMS[(t + 1 + int(rng.integers(len(SYNONYMS) - 1))) % len(SYNONYMS)]
            kp, label = f"{brand} {other[1]}", 0
        rows.append({"title": f"{colour} {title}", "category": cat, "keyphrase": kp, "label": label,
                     "item_id": 1000 + i, "keyphrase_id": 5000 + i})
    df = pd.DataFrame(rows)
    return df if with_ids else df.drop(columns=["item_id", "keyphrase_id"])


def tiny_settings(make_settings, lake_root, base_model: str, **train):
    """Settings for tiny-encoder training: Matryoshka [32, 16], serve at 16, a few steps, high LR. The step
    caps decide (many epochs allowed, no held-out evaluation) unless a test passes otherwise. The listwise kd task
    is off (``kd_list_ratio`` 0) unless a test turns it on: the tests of other tasks keep their task sets."""
    t = {"base_model": base_model, "matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 24,
         "epochs": 100, "bi_epochs": 100, "evals_per_epoch": 0,
         "cross_max_length": 48, "learning_rate": 2e-3, "warmup_ratio": 0.0, "cross_max_steps": 30,
         "bi_max_steps": 40, "min_rows": 20, "test_fraction": 0.3, "device": "cpu", "eval_k": 5,
         "promote_tolerance": 0.01, "kd_list_ratio": 0.0,
         "hybrid_min_heldout_pairs": 10}  # the tiny worlds' held-out splits are a few dozen pairs
    t.update(train)
    return make_settings(lake_root, train=t, serve={"dim": 16})


DS = "2026-10-10"


def write_lake_inputs(settings, pairs: pd.DataFrame, ds: str = DS, ctr: bool = True) -> None:
    """A label store partition (contract llm_labels) from ``pairs`` (with ids), and when ``ctr``: catalog,
    keyphrases and CTR labels whose positives are the relevant pairs."""
    from keyphrase_pipeline.core.lake import Lake, write_parquet_atomic
    from keyphrase_pipeline.labels.store import text_hash

    lake = Lake.from_settings(settings)
    df = pairs.copy()
    df["text_hash"] = [text_hash(t, c, k) for t, c, k in zip(df["title"], df["category"], df["keyphrase"])]
    df["pair_key"] = [h + "-sim" for h in df["text_hash"]]
    df["source"] = "random"
    df["p_yes"] = np.where(df["label"] == 1, 0.9, 0.1)
    df["label"] = df["label"].astype("int32")
    df["judge"] = "simulated"
    df["judge_model"] = "sim"
    df["prompt_version"] = "v1"
    df["labelled_at"] = pd.Timestamp("2026-10-10 01:00:00")
    write_parquet_atomic(df, lake.path("llm_store", ds=ds))
    if not ctr:
        return
    catalog = pd.DataFrame({"item_id": df["item_id"].astype("int64"), "title": df["title"], "category": df["category"],
                            "updated_at": pd.Timestamp("2026-10-01"), "active": True})
    write_parquet_atomic(catalog, lake.path("catalog", ds=ds))
    kps = pd.DataFrame({"keyphrase_id": df["keyphrase_id"].astype("int64"), "text": df["keyphrase"]})
    write_parquet_atomic(kps, lake.path("keyphrases"))
    pos = df[df["label"] == 1]
    ctr_df = pd.DataFrame({"item_id": pos["item_id"].astype("int64"), "keyphrase_id": pos["keyphrase_id"].astype("int64"),
                           "impressions": np.int64(100), "clicks": np.int64(10), "ctr": 0.1, "label": np.int32(1)})
    write_parquet_atomic(ctr_df, lake.path("ctr_labels", ds=ds))


_CACHE: dict = {}


def tiny_bases() -> dict:
    """Once per test process: a tiny random base encoder and a second one with other random weights."""
    if "bases" not in _CACHE:
        import tempfile
        from pathlib import Path

        from keyphrase_pipeline.models.tiny import build_tiny_encoder

        root = Path(tempfile.mkdtemp(prefix="kp-distill-"))
        import atexit
        import shutil

        atexit.register(shutil.rmtree, root, True)
        _CACHE["bases"] = {"root": root, "base": build_tiny_encoder(root / "base", seed=0),
                           "random": build_tiny_encoder(root / "random", seed=1)}
    return _CACHE["bases"]


def trained_world(make_settings) -> dict:
    """Once per test process: a tiny base encoder, a lake with labels + CTR, a trained cross-encoder and a
    trained student in its registry (not yet promoted). Tests copy ``lake`` before writing to it."""
    if "world" in _CACHE:
        return _CACHE["world"]
    from keyphrase_pipeline.stages import train_bi, train_cross

    bases = tiny_bases()
    root, base, random_model = bases["root"], bases["base"], bases["random"]
    lake = root / "lake"
    settings = tiny_settings(make_settings, lake, base)
    pairs = make_pairs(240, seed=0, with_ids=True)
    write_lake_inputs(settings, pairs)
    cross = train_cross.run(settings, DS)
    student = train_bi.run(settings, DS)
    _CACHE["world"] = {"root": root, "base": base, "random": random_model, "lake": lake, "settings": settings,
                       "cross": cross, "student": student, "pairs": pairs}
    return _CACHE["world"]
