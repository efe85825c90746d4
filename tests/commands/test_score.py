"""`kp score`: cross- and bi-encoders, CSV and parquet, registry versions, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distill_helpers import make_pairs, trained_world
from testsupport import make_settings


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    from keyphrase_pipeline.core.settings import get_settings

    w = trained_world(make_settings)
    monkeypatch.setenv("KP_LAKE_ROOT", str(w["lake"]))
    monkeypatch.setenv("KP_TRAIN__MATRYOSHKA_DIMS", "[32, 16]")
    monkeypatch.setenv("KP_SERVE__DIM", "16")
    get_settings.cache_clear()
    yield w
    get_settings.cache_clear()


def _pairs(tmp_path, ext):
    df = make_pairs(12, seed=4).drop(columns=["label"])
    df["my_id"] = range(12)  # extra input columns are kept
    df.loc[3, "category"] = ""
    p = tmp_path / f"pairs.{ext}"
    df.to_csv(p, index=False) if ext == "csv" else df.to_parquet(p, index=False)
    return p, df


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_score_bi_and_cross(tmp_path, cli_env, ext):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.models.bi_encoder import load_hybrid, load_student, score_pairs, served_scores
    from keyphrase_pipeline.models.cross_encoder import load_cross, predict_pairs

    w = cli_env
    src, df = _pairs(tmp_path, ext)
    out_bi = tmp_path / f"bi.{ext}"
    assert cli.main(["score", "--model", w["student"]["version"], "--pairs", str(src), "--out", str(out_bi)]) == 0
    got = pd.read_csv(out_bi, keep_default_na=False) if ext == "csv" else pd.read_parquet(out_bi)
    assert list(got.columns) == list(df.columns) + ["score", "predicted_label", "cosine"]
    assert got["my_id"].tolist() == list(range(12))
    # served: the cosine at serve.dim plus the hybrid bonus of the student's kp_model.json (the world's student keeps one)
    hybrid = load_hybrid(w["student"]["path"])
    assert hybrid is not None
    student = load_student(str(Path(w["student"]["path"]) / "model"), "cpu")
    texts = df["title"].tolist(), df["category"].fillna("").tolist(), df["keyphrase"].tolist()
    want = served_scores(student, hybrid, *texts, dim=16)
    np.testing.assert_allclose(got["score"].to_numpy(), want, atol=1e-5)
    # and beside it the cosine alone, at the same cut: what the lexical bonus was added to
    np.testing.assert_allclose(got["cosine"].to_numpy(), score_pairs(student, *texts, dim=16), atol=1e-5)
    assert not np.allclose(got["cosine"], got["score"])
    # the label uses the threshold stored with the model at training time (chosen on its held-out pairs)
    th = json.loads((Path(w["student"]["path"]) / "model" / "kp_model.json").read_text())["threshold"]
    assert th == w["student"]["threshold"]
    assert got["predicted_label"].tolist() == (got["score"] >= th).astype(int).tolist()

    out_cross = tmp_path / f"cross.{ext}"
    assert cli.main(["score", "--model", w["cross"]["path"], "--pairs", str(src), "--out", str(out_cross)]) == 0
    got = pd.read_csv(out_cross, keep_default_na=False) if ext == "csv" else pd.read_parquet(out_cross)
    assert list(got.columns) == list(df.columns) + ["score", "predicted_label"]  # a cross-encoder has no cosine
    want = predict_pairs(load_cross(str(Path(w["cross"]["path"]) / "model"), "cpu"), df["title"].tolist(),
                         df["category"].fillna("").tolist(), df["keyphrase"].tolist())
    np.testing.assert_allclose(got["score"].to_numpy(), want, atol=1e-5)
    assert got["score"].between(0, 1).all()
    th = json.loads((Path(w["cross"]["path"]) / "model" / "kp_model.json").read_text())["threshold"]
    assert got["predicted_label"].tolist() == (got["score"] >= th).astype(int).tolist()


def test_score_echoes_text_columns_as_typed(tmp_path, cli_env):
    """Text columns are read as text: keyphrases 007, 0501, 1e3 come back byte for byte (not 7.0 ...)."""
    from keyphrase_pipeline import cli

    w = cli_env
    src = tmp_path / "numeric.csv"
    src.write_text("title,category,keyphrase,my_id\n0501 phone,,007,01\nred sofa,furniture,1e3,2\n")
    out = tmp_path / "o.csv"
    assert cli.main(["score", "--model", w["student"]["version"], "--pairs", str(src), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("title,category,keyphrase,my_id,score")
    assert lines[1].startswith("0501 phone,,007,01,") and lines[2].startswith("red sofa,furniture,1e3,2,")


@pytest.mark.parametrize("out_ext", ["csv", "parquet"])
def test_score_echoes_every_text_byte_for_byte(tmp_path, cli_env, out_ext):
    """Values CSV type inference would change (numbers, NA markers, booleans) and text the model sees
    normalised (invisible characters, full-width letters, spaces) are written back exactly as read."""
    from keyphrase_pipeline import cli

    odd = ["007", "0501", "1e3", "NA", "null", "NaN", "n/a", "TRUE", "-0", " 42 ", "mug\u200b", "ｍｕｇ", "\ufeffcase"]
    df = pd.DataFrame({"title": [f"{k} phone" for k in odd], "category": ["NA", "", *["0.50"] * (len(odd) - 2)],
                       "keyphrase": odd, "ref": [f"{i:04d}" for i in range(len(odd))]})
    src = tmp_path / "odd.csv"
    src.write_text(df.to_csv(index=False), encoding="utf-8")
    out = tmp_path / f"o.{out_ext}"
    assert cli.main(["score", "--model", cli_env["student"]["version"], "--pairs", str(src), "--out", str(out)]) == 0
    got = pd.read_csv(out, dtype=str, keep_default_na=False) if out_ext == "csv" else pd.read_parquet(out)
    for col in ("title", "category", "keyphrase", "ref"):
        assert got[col].tolist() == df[col].tolist(), col
    if out_ext == "csv":  # and the file's text columns are the input's, character for character
        assert [ln.rsplit(",", 3)[0] for ln in out.read_text(encoding="utf-8").splitlines()] == \
            src.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("title, keyphrase, message", [
    ("\u200b\u200d\ufeff", "phone case", r"1 row\(s\) with empty 'title' \(first at 0-based row 1\)"),
    ("red case", "\u202e\u2066\u2069", r"1 row\(s\) with empty 'keyphrase' \(first at 0-based row 1\)"),
    ("🙂 😀", "phone case", r"1 row\(s\) with unreadable 'title'.*first at 0-based row 1"),
    ("red case", "🎉", r"1 row\(s\) with unreadable 'keyphrase'.*first at 0-based row 1"),
])
def test_score_refuses_text_the_model_cannot_read(tmp_path, cli_env, title, keyphrase, message):
    from keyphrase_pipeline.commands import score
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.core.settings import get_settings

    src = tmp_path / "p.csv"
    pd.DataFrame({"title": ["red phone", title], "category": ["x", "x"], "keyphrase": ["phone", keyphrase]}) \
        .to_csv(src, index=False)
    out = tmp_path / "o.csv"
    for model in (cli_env["student"]["version"], cli_env["cross"]["path"]):
        with pytest.raises(DataError, match=message):
            score.run(get_settings(), model, str(src), str(out))
    assert not out.exists()


def test_a_file_scored_before_gets_this_runs_columns_last_and_keeps_its_own(tmp_path, cli_env):
    """Re-scoring kp score's own output: its score, predicted_label and cosine are replaced by this run's and written
    last in this run's order, or dropped when this model writes no such column (the stats name both); an input label
    and every other column are kept as read."""
    from keyphrase_pipeline.commands import score
    from keyphrase_pipeline.core.settings import get_settings

    src = tmp_path / "scored.csv"
    pd.DataFrame({"id": ["a", "b"], "title": ["red phone case", "blue mug"], "category": ["", ""],
                  "keyphrase": ["phone case", "mug"], "score": ["old", "old"], "cosine": ["c1", "c2"],
                  "predicted_label": ["x", "y"], "label": ["1", "0"]}).to_csv(src, index=False)
    out = tmp_path / "o.csv"
    stats = score.run(get_settings(), cli_env["student"]["version"], str(src), str(out))
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(got.columns) == ["id", "title", "category", "keyphrase", "label", "score", "predicted_label", "cosine"]
    assert stats["columns"] == ["score", "predicted_label", "cosine"] == stats["replaced_input_columns"]
    assert got["label"].tolist() == ["1", "0"] and "c1" not in got["cosine"].tolist()
    assert stats["dropped_input_columns"] == []
    # scored again by a cross-encoder, which writes no cosine: the student's would not describe this score, so it goes
    scored = tmp_path / "scored_by_student.csv"
    out.rename(scored)
    stats = score.run(get_settings(), cli_env["cross"]["path"], str(scored), str(out))
    got = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(got.columns) == ["id", "title", "category", "keyphrase", "label", "score", "predicted_label"]
    assert stats["replaced_input_columns"] == ["score", "predicted_label"] and stats["dropped_input_columns"] == ["cosine"]


def test_a_nullable_columns_missing_value_is_no_text(tmp_path, cli_env):
    """A parquet written from pandas' nullable strings holds pd.NA for a missing value: a missing category scores as
    no category (not the word "<NA>"), a missing title is refused as empty."""
    from keyphrase_pipeline.commands import score
    from keyphrase_pipeline.core.errors import DataError
    from keyphrase_pipeline.core.settings import get_settings

    df = pd.DataFrame({"title": ["red phone case", "red phone case"], "category": [pd.NA, ""],
                       "keyphrase": ["phone case", "phone case"]}).astype("string")
    src, out = tmp_path / "p.parquet", tmp_path / "o.csv"
    df.to_parquet(src)
    assert pd.read_parquet(src)["category"].iloc[0] is pd.NA  # what the scorer reads
    score.run(get_settings(), cli_env["student"]["version"], str(src), str(out))
    got = pd.read_csv(out)
    assert got["score"].iloc[0] == pytest.approx(got["score"].iloc[1], abs=1e-6)
    df.loc[0, "title"] = pd.NA
    df.to_parquet(src)
    with pytest.raises(DataError, match=r"1 row\(s\) with empty 'title' \(first at 0-based row 0\)"):
        score.run(get_settings(), cli_env["student"]["version"], str(src), str(tmp_path / "o2.csv"))


def test_score_errors_and_plugin(tmp_path, cli_env):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.commands import score
    from keyphrase_pipeline.core.errors import ConfigError, DataError
    from keyphrase_pipeline.core.settings import get_settings

    w = cli_env
    src, df = _pairs(tmp_path, "csv")
    assert cli.main(["score", "--model", str(tmp_path), "--pairs", str(src), "--out", str(tmp_path / "o.csv")]) == 2
    assert cli.main(["score", "--model", w["student"]["version"], "--pairs", str(src), "--out", str(tmp_path / "o.txt")]) == 2
    bad = tmp_path / "bad.csv"
    df.drop(columns=["keyphrase"]).to_csv(bad, index=False)
    assert cli.main(["score", "--model", w["student"]["version"], "--pairs", str(bad), "--out", str(tmp_path / "o.csv")]) == 3
    # a file read by its extension: another one is refused before anything is read (not a parquet reader's error)
    as_json = tmp_path / "pairs.json"
    df.to_json(as_json)
    with pytest.raises(ConfigError, match=r"pairs\.json: use a \.csv or \.parquet file"):
        score.run(get_settings(), w["student"]["version"], str(as_json), str(tmp_path / "o.csv"))
    # a header naming a column twice: pandas would rename one (score.1) and the rows could not be written back as read
    twice = tmp_path / "twice.csv"
    twice.write_text("title,category,keyphrase,score,score\nred case,,case,0.2,0.3\n")
    with pytest.raises(DataError, match=r"\['score'\] appear more than once"):
        score.run(get_settings(), w["student"]["version"], str(twice), str(tmp_path / "o.csv"))
    assert not (tmp_path / "o.csv").exists()
    # ONNX files that `kp export` did not verify are refused (bad input); a scorer plugs in without the CLI
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "item.onnx").write_bytes(b"")
    (onnx / "keyphrase.onnx").write_bytes(b"")
    assert cli.main(["score", "--model", str(onnx), "--pairs", str(src), "--out", str(tmp_path / "o.csv")]) == 3
    builtin = score.SCORERS["onnx"]

    class LengthScorer:
        kind = "onnx"

        def __init__(self, settings, model_dir):
            pass

        def score(self, pairs):
            return np.array([len(k) for k in pairs["keyphrase"]], dtype=float)

    score.register_scorer("onnx", LengthScorer)
    try:
        fig = score.run(make_settings(tmp_path / "l"), str(onnx), str(src), str(tmp_path / "o.csv"))
        assert fig["kind"] == "onnx"
        assert pd.read_csv(tmp_path / "o.csv")["score"].tolist() == [float(len(k)) for k in df["keyphrase"]]
    finally:
        score.register_scorer("onnx", builtin)


def test_stored_threshold_is_the_models_own(tmp_path):
    """A model directory's threshold comes from its own marker; only an ONNX export borrows its student's."""
    from keyphrase_pipeline.commands.score import stored_threshold
    from keyphrase_pipeline.models.bi_encoder import write_marker

    (tmp_path / "v" / "model").mkdir(parents=True)
    write_marker(tmp_path / "v" / "model", "bi", threshold=0.93)
    other = tmp_path / "v" / "other_encoder"
    other.mkdir()
    assert stored_threshold(other) is None
    onnx = tmp_path / "v" / "onnx"
    onnx.mkdir()
    (onnx / "export.json").write_text("{}")
    assert stored_threshold(onnx) == 0.93 and stored_threshold(tmp_path / "v" / "model") == 0.93
