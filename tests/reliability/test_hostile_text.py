"""Text that is empty or changed by reading (issue 13), through the real stages.

* Titles and keyphrases made only of invisible characters (zero-width space/joiner, BOM, bidi overrides
  and isolates) used to pass the "empty text" check, embed to one shared vector and be recommended to each
  other at cosine 1.000; emoji-only ones became all ``[UNK]`` and did the same. Now select-pairs
  quarantines the blank ones (``empty_title`` / ``empty_keyphrase``) before the judge, embed quarantines
  blank (``empty text``) and all-[UNK] (``unreadable text``) ones, and none of them is indexed or
  recommended.
* ``kp score`` echoes text CSV type inference would have changed (``007`` -> 7.0, ``NA`` -> NaN) byte
  for byte, and refuses what the model cannot read.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "jobs"))
from reliability_helpers import DS  # noqa: E402
from serve_helpers import DS as SERVE_DS  # noqa: E402
from serve_helpers import catalog, keyphrases, register, serve_model, serve_settings, write_inputs  # noqa: E402,F401

from keyphrase_pipeline.core.lake import Lake, read_parquet  # noqa: E402
from keyphrase_pipeline.core.layout import onnx_dir  # noqa: E402

pytestmark = pytest.mark.spark

INVISIBLE = ["\u200b", "\ufeff\u200d", "\u202e\u2066\u2069", "\u200b \u200c\t\u2060\u00ad", "\u200e\u200f\u202c"]
EMOJI = ["🙂", "😀 🎉", "👨\u200d👩\u200d👧"]


# ---- before the judge --------------------------------------------------------------------------------
def test_invisible_titles_and_keyphrases_are_quarantined_before_the_judge(pairs_world, spark):
    from keyphrase_pipeline.stages import select_pairs

    s = pairs_world.with_overrides(**{"pairs.daily_budget": 2000})
    lake = Lake.from_settings(s)
    cat = read_parquet(lake.path("catalog", ds=DS))
    active = cat.index[cat["active"]]
    bad_items = {int(cat.loc[active[j], "item_id"]): INVISIBLE[j % len(INVISIBLE)] for j in range(10)}
    for j, t in enumerate(bad_items.values()):
        cat.loc[active[j], "title"] = t
    cat.loc[active[10], "title"] = "\u200bvintage\u200d mug\ufeff"  # readable once normalised: kept
    kept_item = int(cat.loc[active[10], "item_id"])
    kps = read_parquet(lake.path("keyphrases"))
    bad_kps = {int(kps.loc[j, "keyphrase_id"]): INVISIBLE[j % len(INVISIBLE)] for j in range(5)}
    kps.loc[:4, "text"] = list(bad_kps.values())
    from keyphrase_pipeline.core.lake import write_parquet_atomic

    write_parquet_atomic(cat, lake.path("catalog", ds=DS))
    write_parquet_atomic(kps, lake.path("keyphrases"))

    stats = select_pairs.run(s, DS, spark=spark)
    assert stats["catalog_quarantined_by_reason"] == {"empty_title": 10} and stats["catalog_quarantined"] == 10
    assert stats["keyphrases_quarantined_by_reason"] == {"empty_keyphrase": 5} and stats["keyphrases_quarantined"] == 5
    qc = read_parquet(lake.path("quarantine", "catalog", ds=DS))
    assert dict(zip(qc["item_id"], qc["title"])) == bad_items and set(qc["reason"]) == {"empty_title"}
    qk = read_parquet(lake.path("quarantine", "keyphrases", ds=DS))
    assert dict(zip(qk["keyphrase_id"], qk["text"])) == bad_kps and set(qk["reason"]) == {"empty_keyphrase"}
    pairs = select_pairs.read_pairs(s, DS)
    assert len(pairs) > 0
    assert not set(pairs["item_id"]) & set(bad_items) and not set(pairs["keyphrase_id"]) & set(bad_kps)
    assert stats["items"] == cat.loc[cat["active"], "item_id"].nunique() - 10 and kept_item not in set(qc["item_id"])
    import json

    assert json.loads(open(lake.run_stats_path(DS, "select_pairs")).read())["catalog_quarantined"] == 10
    # the same day rerun on a corrected catalog: the stale quarantine is emptied
    cat["title"] = cat["title"].where(~cat["item_id"].isin(list(bad_items)), "fixed title")
    write_parquet_atomic(cat, lake.path("catalog", ds=DS))
    assert select_pairs.run(s, DS, spark=spark)["catalog_quarantined"] == 0
    assert len(read_parquet(lake.path("quarantine", "catalog", ds=DS))) == 0


# ---- embedding, index, recommendations ---------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_serving(tmp_path_factory, serve_model, spark):  # noqa: F811
    """The serving world with hostile texts, through export, embed, index and recommend: (settings, stats)."""
    from keyphrase_pipeline.stages import embed, export, index, recommend

    root = tmp_path_factory.mktemp("hostile_text") / "lake"
    s = serve_settings(root)
    cat, kps = catalog(), keyphrases()
    # items 1, 2 invisible-only (same category), 3 emoji-only, 4 readable with hidden characters
    cat.loc[cat["item_id"] == 1, "title"] = INVISIBLE[0]
    cat.loc[cat["item_id"] == 5, "title"] = INVISIBLE[2]
    cat.loc[cat["item_id"] == 3, "title"] = EMOJI[0]
    cat.loc[cat["item_id"] == 7, "title"] = EMOJI[1]
    cat.loc[cat["item_id"] == 4, "title"] = "\ufeffｒｅｄ\u200b pro\u202e case"
    kps.loc[kps["keyphrase_id"] == 100, "text"] = INVISIBLE[1]
    kps.loc[kps["keyphrase_id"] == 101, "text"] = INVISIBLE[3]
    kps.loc[kps["keyphrase_id"] == 102, "text"] = EMOJI[2]
    kps.loc[kps["keyphrase_id"] == 103, "text"] = EMOJI[0]
    write_inputs(s, SERVE_DS, cat=cat, kps=kps)
    register(s, serve_model)
    export.run(s, SERVE_DS)
    stats = {"items": embed.run(s, SERVE_DS, "items", spark=spark),
             "keyphrases": embed.run(s, SERVE_DS, "keyphrases", spark=spark)}
    index.run(s, SERVE_DS)
    recommend.run(s, SERVE_DS)
    return s, stats


BAD_ITEMS = {1: "empty text", 5: "empty text", 3: "unreadable text", 7: "unreadable text"}
BAD_KPS = {100: "empty text", 101: "empty text", 102: "unreadable text", 103: "unreadable text"}


def test_blank_and_emoji_only_texts_are_quarantined_by_embed(hostile_serving):
    s, stats = hostile_serving
    lake = Lake.from_settings(s)
    for what, bad in (("items", BAD_ITEMS), ("keyphrases", BAD_KPS)):
        assert stats[what]["quarantined"] == 4
        assert stats[what]["quarantined_by_reason"] == {"empty text": 2, "unreadable text": 2}
        q = read_parquet(lake.path("quarantine", f"embed_{what}", ds=SERVE_DS))
        assert dict(zip(q["id"], q["reason"])) == bad
    assert stats["items"]["rows_total"] == 36 - 4 and stats["keyphrases"]["rows_total"] == 60 - 4


def test_blank_and_emoji_only_texts_are_neither_indexed_nor_recommended(hostile_serving):
    from keyphrase_pipeline.core.lake import local_path
    from keyphrase_pipeline.core.layout import INDEX_IDMAP, index_build_dir

    s, _ = hostile_serving
    lake = Lake.from_settings(s)
    idmap = pd.read_parquet(Path(local_path(index_build_dir(s, SERVE_DS))) / INDEX_IDMAP)
    assert not set(idmap["keyphrase_id"]) & set(BAD_KPS) and len(idmap) == 56
    recs = read_parquet(lake.path("recommendations", ds=SERVE_DS))
    assert not set(recs["item_id"]) & set(BAD_ITEMS)
    assert not set(recs["keyphrase_id"]) & set(BAD_KPS)
    assert 4 in set(recs["item_id"])  # hidden characters in a readable title change nothing
    assert recs["score"].max() < 0.999  # nothing left that every blank text shares


def test_readable_title_with_hidden_characters_embeds_as_its_plain_text(hostile_serving):
    import numpy as np

    from keyphrase_pipeline.core.layout import embeddings_dir
    from keyphrase_pipeline.models.onnx_tower import OnnxTower

    s, _ = hostile_serving
    emb = read_parquet(embeddings_dir(s, "items", "v1")).set_index("id")
    cat = catalog()
    plain = OnnxTower(f"{onnx_dir(s, 'v1')}/item").embed([f"red pro case [SEP] {cat.loc[3, 'category']}"])[0]
    np.testing.assert_allclose(emb.loc[4, "embedding"], plain, atol=1e-5)


# ---- kp score -----------------------------------------------------------------------------------------
def test_kp_score_echoes_numeric_looking_text_and_refuses_unreadable_rows(hostile_serving, tmp_path, monkeypatch):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings

    s, _ = hostile_serving
    monkeypatch.setenv("KP_LAKE_ROOT", str(Lake.from_settings(s).root))
    monkeypatch.setenv("KP_SERVE__DIM", "16")
    monkeypatch.setenv("KP_TRAIN__MATRYOSHKA_DIMS", "[32, 16]")
    get_settings.cache_clear()
    try:
        model = onnx_dir(s, "v1")
        src = tmp_path / "pairs.csv"
        src.write_text("title,category,keyphrase,sku\n007 agent mug,NA,007,0501\nred case,null,1e3,00012\n"
                       "blue mixer,,NA,1.50\n", encoding="utf-8")
        out = tmp_path / "scored.csv"
        assert cli.main(["score", "--model", model, "--pairs", str(src), "--out", str(out)]) == 0
        lines = out.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "title,category,keyphrase,sku,score"
        assert [ln.rsplit(",", 1)[0] for ln in lines[1:]] == src.read_text(encoding="utf-8").splitlines()[1:]
        # an invisible-only keyphrase or an emoji-only title: exit 3, nothing written
        for row in ("mug,,\u200b\u202e\u2069,1", "🙂 😀,,mug,1"):
            bad = tmp_path / "bad.csv"
            bad.write_text(f"title,category,keyphrase,sku\nred case,,case,0\n{row}\n", encoding="utf-8")
            assert cli.main(["score", "--model", model, "--pairs", str(bad), "--out", str(tmp_path / "b.csv")]) == 3
            assert not (tmp_path / "b.csv").exists()
    finally:
        get_settings.cache_clear()


def test_nothing_left_but_blank_texts_is_a_clear_error(tmp_path, serve_model, spark):  # noqa: F811
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.stages import embed, export

    s = serve_settings(tmp_path / "lake")
    kps = keyphrases().assign(text=lambda d: [INVISIBLE[i % 5] if i % 2 else EMOJI[i % 3] for i in range(len(d))])
    write_inputs(s, SERVE_DS, kps=kps)
    register(s, serve_model)
    export.run(s, SERVE_DS)
    with pytest.raises(DataError, match="no keyphrases to embed"):
        embed.run(s, SERVE_DS, "keyphrases", spark=spark)
    q = read_parquet(Lake.from_settings(s).path("quarantine", "embed_keyphrases", ds=SERVE_DS))
    assert len(q) == 60 and set(q["reason"]) == {"empty text", "unreadable text"}
    shutil.rmtree(tmp_path / "lake", ignore_errors=True)
