"""keyphrase_pipeline.artifacts.serving: the published-version reader the UI uses, and the kp CLI exit codes of the stage."""

from __future__ import annotations

import numpy as np
import pytest
from serve_helpers import DS, ready, serve_model, serve_ready  # noqa: F401

from keyphrase_pipeline.artifacts import serving
from keyphrase_pipeline.artifacts.serving import current_version
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.core.layout import embeddings_dir, onnx_dir
from keyphrase_pipeline.models.onnx_tower import OnnxTower
from keyphrase_pipeline.stages import publish

pytestmark = pytest.mark.spark


def test_nothing_published(ready):
    assert current_version(ready) is None
    with pytest.raises(DataError, match="kp publish"):
        serving.load_current(ready)


def test_search_by_text_and_by_item_id(ready):
    publish.run(ready, DS)
    b = serving.load_current(ready)
    assert serving.load_current(ready) is b  # cached per version
    text = "red pro max item 0 [SEP] phones"
    got = b.search(text, k=5)
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    # the same answer as brute force with the exported item tower over the keyphrase embeddings
    kps = read_parquet(embeddings_dir(ready, "keyphrases", "v1"))
    q = OnnxTower(f"{onnx_dir(ready, 'v1')}/item").embed([text])[0]
    scores = np.stack(kps["embedding"]) @ q
    from keyphrase_pipeline.models.text import keyphrase_identity

    texts = dict(zip(b.keyphrases.keys(), b.keyphrases.values()))
    best = {}  # brute force, one keyphrase per normalised text (the index holds repeated texts)
    for kid, sc in zip(kps["id"], scores):
        key = keyphrase_identity(texts[int(kid)])
        best[key] = max(best.get(key, -2.0), float(sc))
    np.testing.assert_allclose([r["score"] for r in got], sorted(best.values(), reverse=True)[:5], atol=1e-5)
    assert all(r["keyphrase"] for r in got)
    assert len({keyphrase_identity(r["keyphrase"]) for r in b.search(text, k=40)}) == 40
    by_id = b.search(2, k=3)
    recs = read_parquet(Lake.from_settings(ready).path("recommendations", ds=DS))
    want = recs[recs["item_id"] == 2].sort_values("rank").head(3)
    assert [r["keyphrase_id"] for r in by_id] == want["keyphrase_id"].tolist()
    assert b.search(999_999) == []
    with pytest.raises(DataError, match="empty query"):
        b.search("   ")
    # the query goes through the catalog's text rule: invisible characters alone are blank, emoji alone
    # are all [UNK] to the tower (the vector every such text shares), and hidden characters change nothing
    with pytest.raises(DataError, match="empty query"):
        b.search("\u200b\ufeff\u202e\u2066\u2069")
    with pytest.raises(DataError, match="unreadable query"):
        b.search("🙂 😀")
    assert b.search("\ufeffｒｅｄ\u200b pro max item 0 [SEP] phones", k=5) == got


def test_cli_exit_codes(ready, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_LAKE_ROOT", ready.lake_root)
    monkeypatch.setenv("KP_SERVE__DIM", "16")
    monkeypatch.setenv("KP_TRAIN__MATRYOSHKA_DIMS", "[32, 16]")
    get_settings.cache_clear()
    try:
        assert cli.main(["rollback"]) == 3  # nothing published: bad input
        assert cli.main(["publish", "--ds", DS]) == 0
        assert cli.main(["rollback"]) == 3  # only one version
        assert cli.main(["index", "--ds", DS]) == 0
        assert cli.main(["embed", "--ds", DS, "--what", "nothing"]) == 2
    finally:
        get_settings.cache_clear()
