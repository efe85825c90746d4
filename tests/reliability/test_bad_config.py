"""Configuration that cannot work: an ANN factory with more IVF lists than the data can train. `kp index`
used to exit 1 ("failed unexpectedly", FAISS's own abort); now the factory is fitted to the data before
training, the change logged and recorded, and a string FAISS rejects is a bad configuration (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_helpers import embedded_keyphrase_world

from keyphrase_pipeline import cli
from keyphrase_pipeline.core.settings import get_settings, settings_env

DS = "2026-10-05"


@pytest.fixture
def kp_env(monkeypatch):
    """Run ``kp`` in-process with the given settings (through KP_* variables, as a deployment would)."""

    def use(settings):
        for k, v in settings_env(settings).items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return settings

    yield use
    get_settings.cache_clear()


def test_ivf4096_over_602_keyphrases_builds_ivf15_and_says_why(tmp_path, kp_env, caplog, capsys):
    s = kp_env(embedded_keyphrase_world(tmp_path / "lake", 602, exact_index_max=100, ann_factory="IVF4096,Flat",
                                        ann_nprobe=16, min_recall=0.9))
    with caplog.at_level("WARNING"):
        assert cli.main(["index", "--ds", DS]) == 0
    assert "index factory changed for 602 keyphrases" in caplog.text and "'IVF15,Flat' instead" in caplog.text
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    meta = json.loads((Path(stats["path"]) / "index_meta.json").read_text())
    assert meta["factory"] == "IVF15,Flat" and meta["factory_requested"] == "IVF4096,Flat" and not meta["exact"]
    assert meta["factory_note"] == ("'IVF4096,Flat' has 4096 IVF lists, which needs 159744 training vectors "
                                    "(39 per list); only 602: 'IVF15,Flat' instead")
    assert meta["train_sample"] == 602 and meta["search_params"] == {"nprobe": 16}
    assert meta["ann_recall_at_k"] == 1.0  # nprobe 16 >= 15 lists: every list searched
    assert s.serve.ann_factory == "IVF4096,Flat"  # the setting itself is not rewritten


def test_too_few_keyphrases_for_pq_codebooks_fall_back_to_exact(tmp_path, kp_env, capsys):
    kp_env(embedded_keyphrase_world(tmp_path / "lake", 602, exact_index_max=100, ann_factory="IVF16,PQ4"))
    assert cli.main(["index", "--ds", DS]) == 0
    meta = json.loads((Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["path"]) / "index_meta.json").read_text())
    assert meta["exact"] and meta["factory"] == "Flat" and meta["train_sample"] == 0
    assert "PQ codebooks of 256 centroids" in meta["factory_note"] and "exact search (Flat)" in meta["factory_note"]


def test_a_factory_faiss_rejects_exits_2_naming_the_setting(tmp_path, kp_env, capsys):
    kp_env(embedded_keyphrase_world(tmp_path / "lake", 602, exact_index_max=100, ann_factory="IVF4096;Flat"))
    assert cli.main(["index", "--ds", DS]) == 2
    err = capsys.readouterr().err
    assert "serve.ann_factory='IVF4096;Flat' is not a FAISS index factory string" in err
