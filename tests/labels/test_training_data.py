"""Reading label sources into training frames: user files (validation), the lake, the stable split."""

from __future__ import annotations

import pandas as pd
import pytest
from distill_helpers import DS, make_pairs, write_lake_inputs

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.labels.training_data import in_test_split, load_training_data, read_labels_file


def _write(tmp_path, df, name="pairs.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False) if name.endswith(".csv") else df.to_parquet(p, index=False)
    return str(p)


def test_labels_file_ok_csv_and_parquet_probabilities(tmp_path):
    df = make_pairs(60)
    df["label"] = df["label"].astype(float)
    df.loc[0, "label"] = 0.7  # probabilities are accepted
    df.loc[1, "category"] = ""  # category may be empty
    for name in ("pairs.csv", "pairs.parquet"):
        out = read_labels_file(_write(tmp_path, df, name), min_rows=50)
        assert len(out) == 60
        assert out.loc[0, "p"] == pytest.approx(0.7) and out.loc[0, "label"] == 1
        assert out.loc[1, "category"] == ""
        assert set(out["label"].unique()) <= {0, 1}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["keyphrase"]), "missing column"),
    (lambda d: d.assign(title=[""] + list(d["title"][1:])), "empty 'title'"),
    (lambda d: d.assign(keyphrase=list(d["keyphrase"][:-1]) + ["  "]), "empty 'keyphrase'"),
    (lambda d: d.assign(title=list(d["title"][:3]) + ["\u200b\u200d\ufeff"] + list(d["title"][4:])),
     r"1 row\(s\) with empty 'title' \(first at 0-based row 3\)"),  # invisible characters only
    (lambda d: d.assign(keyphrase=list(d["keyphrase"][:5]) + ["\u202e\u2066\u2069"] * 2 + list(d["keyphrase"][7:])),
     r"2 row\(s\) with empty 'keyphrase' \(first at 0-based row 5\)"),
    (lambda d: d.assign(label=[1.5] + list(d["label"][1:])), r"not a number in \[0, 1\]"),
    (lambda d: d.assign(label=["yes"] + list(d["label"][1:])), r"not a number in \[0, 1\]"),
    (lambda d: d.head(10), r"only 10 distinct pairs \(10 rows, 0 repeating a pair\)"),
    (lambda d: pd.concat([d.head(2)] * 30), r"only 2 distinct pairs \(60 rows, 58 repeating a pair\)"),
    (lambda d: d.drop(columns=["title"]).rename(columns={"keyphrase": "Keyphrase"}),
     r"missing column\(s\) \['title', 'keyphrase'\]; need \['title', 'keyphrase', 'label'\] \(and optionally "
     r"'category'\), has \['category', 'Keyphrase', 'label'\] \(column names are case- and space-sensitive\)"),
])
def test_labels_file_errors_name_the_problem(tmp_path, mutate, message):
    with pytest.raises(DataError, match=message):
        read_labels_file(_write(tmp_path, mutate(make_pairs(60))), min_rows=50)


def test_labels_file_duplicates_are_counted_and_conflicts_reported(tmp_path, settings, caplog):
    df = make_pairs(60)
    flipped = df.head(5).assign(label=1 - df["label"].head(5))  # 5 pairs judged twice, the other way round
    again = df.iloc[10:13]  # 3 pairs repeated with the same label
    path = _write(tmp_path, pd.concat([df, flipped, again], ignore_index=True))
    with caplog.at_level("WARNING"):
        out = read_labels_file(path, min_rows=50)
    assert len(out) == 60 and out.attrs["file_stats"] == {"rows": 68, "duplicate_rows": 8, "conflicting_pairs": 5}
    assert "8 of 68 rows repeat a pair" in caplog.text and "5 pair(s) carry conflicting labels" in caplog.text
    assert out.head(5)["label"].tolist() == flipped["label"].tolist()  # the last row of a pair is kept
    data = load_training_data(settings, DS, labels=path)
    assert (data.snapshot["file_duplicate_rows"], data.snapshot["file_conflicting_pairs"]) == (8, 5)


@pytest.mark.parametrize("label", [0, 1])
def test_labels_file_of_one_class_is_refused_for_training(tmp_path, settings, label):
    path = _write(tmp_path, make_pairs(60).assign(label=label))
    assert len(read_labels_file(path, min_rows=50)) == 60  # a reader: exports of reviews may be one class
    with pytest.raises(DataError, match=rf"every one of the 60 pairs is labelled {'relevant' if label else 'not relevant'}"):
        load_training_data(settings, DS, labels=path)


def test_labels_file_messages(tmp_path):
    df = make_pairs(60)
    p = tmp_path / "pairs.txt"
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match=r"a file named \.txt is read as parquet: name a CSV file \.csv"):
        read_labels_file(str(p), 10)
    semi = tmp_path / "semi.csv"
    df.to_csv(semi, index=False, sep=";")
    with pytest.raises(DataError, match="is the file comma-separated"):
        read_labels_file(str(semi), 10)
    nan = tmp_path / "nan.parquet"
    df.assign(label=[float("nan")] + df["label"].astype(float).tolist()[1:]).to_parquet(nan)
    with pytest.raises(DataError, match=r"first at 0-based row 0: nan\)"):  # not np.float64(nan)
        read_labels_file(str(nan), 10)


def test_labels_file_emoji_only_text_is_unreadable_to_the_encoder(tmp_path, settings):
    from keyphrase_pipeline.labels.training_data import encoder_tokenizer

    df = make_pairs(60)
    df.loc[7, "title"] = "🙂 😀"
    path = _write(tmp_path, df)
    assert len(read_labels_file(path, min_rows=50)) == 60  # without a tokenizer only blank text is refused
    with pytest.raises(DataError, match=r"1 row\(s\) with unreadable .* 'title' \(first at 0-based row 7\)"):
        read_labels_file(path, min_rows=50, tokenizer=encoder_tokenizer(settings))
    with pytest.raises(DataError, match="unreadable"):
        load_training_data(settings, DS, labels=path)


def test_labels_file_text_that_looks_like_numbers_or_missing_values_stays_as_written(tmp_path):
    """CSV type inference must not touch text: 007, 0501, 1e3, NA, null, nan, true come back as typed."""
    df = make_pairs(60)
    odd = ["007", "0501", "1e3", "NA", "null", "nan", "true", "-0", "1,5"]
    df.loc[: len(odd) - 1, "keyphrase"] = odd
    df.loc[: len(odd) - 1, "title"] = [f"{o} phone" for o in odd]
    df.loc[0, "category"] = "NA"
    out = read_labels_file(_write(tmp_path, df), min_rows=50)
    assert out.loc[: len(odd) - 1, "keyphrase"].tolist() == odd
    assert out.loc[: len(odd) - 1, "title"].tolist() == [f"{o} phone" for o in odd]
    assert out.loc[0, "category"] == "NA"
    with pytest.raises(DataError, match="not a number"):  # the label column is still parsed strictly
        read_labels_file(_write(tmp_path, df.assign(label=["NA"] + list(df["label"][1:]))), min_rows=50)


def test_lake_pairs_the_encoder_cannot_read_are_left_out_and_counted(settings):
    pairs = make_pairs(120, seed=3, with_ids=True)
    pairs.loc[0, "title"] = "\u200b\u200d"  # blank after normalisation
    pairs.loc[1, "title"] = "🙂"  # all [UNK]
    pairs.loc[2, "keyphrase"] = "\ufeff\u202e"
    pairs.loc[3, "keyphrase"] = "😀 🎉"
    pairs.loc[4, "title"] = "ｒｅｄ\u200b ｍｕｇ"  # fine once normalised
    write_lake_inputs(settings, pairs)
    data = load_training_data(settings, DS)
    assert data.snapshot["dropped_texts"]["llm"] == {"empty_keyphrase": 1, "empty_title": 1,
                                                     "unreadable_keyphrase": 1, "unreadable_title": 1}
    assert len(data.llm) == 116 and not set(data.llm["item_id"]) & {1000, 1001, 1002, 1003}
    assert data.llm.set_index("item_id").loc[1004, "title"] == "red mug"
    bad_ids = {1000, 1001, 1002, 1003}
    positives = set(pairs.loc[pairs["label"] == 1, "item_id"])
    assert sum(data.snapshot["dropped_texts"]["ctr"].values()) == len(bad_ids & positives)
    assert not set(data.ctr["item_id"]) & bad_ids


def test_labels_file_missing_or_unreadable(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labels_file(str(tmp_path / "nope.csv"), 10)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match="cannot read"):
        read_labels_file(str(bad), 10)


def test_split_is_stable_and_grows_consistently():
    hashes = [f"h{i}" for i in range(2000)]
    a = in_test_split(hashes, 0.2)
    assert 0.16 < a.mean() < 0.24
    assert (in_test_split(hashes[:500], 0.2) == a[:500]).all()  # membership never depends on the rest
    assert (in_test_split(hashes, 0.2) == a).all()


def test_lake_sources_dedup_split_and_no_leakage(settings):
    pairs = make_pairs(120, seed=3, with_ids=True)
    write_lake_inputs(settings, pairs)
    # a second day re-judges 10 texts (same pair_key): one row per text remains
    from keyphrase_pipeline.core.lake import Lake, read_parquet, write_parquet_atomic

    lake = Lake.from_settings(settings)
    again = read_parquet(lake.path("llm_store", ds=DS)).head(10).copy()
    again["labelled_at"] = pd.Timestamp("2026-10-11 01:00:00")
    write_parquet_atomic(again, lake.path("llm_store", ds="2026-10-11"))
    data = load_training_data(settings, "2026-10-11")
    assert len(data.llm) == 120 and data.llm["text_hash"].is_unique
    assert data.snapshot["label_store_days"] == [DS, "2026-10-11"]
    assert data.snapshot["ctr_ds"] == DS
    assert len(data.llm_train) + len(data.llm_test) == 120 and len(data.llm_test) > 0
    # CTR positives come with texts, and none of them is a held-out test pair
    assert len(data.ctr) > 0 and (data.ctr["title"] != "").all()
    test_ids = set(zip(data.llm_test["item_id"], data.llm_test["keyphrase_id"]))
    assert not test_ids & set(zip(data.ctr["item_id"], data.ctr["keyphrase_id"]))
    positives_in_test = int(data.llm_test["label"].sum())
    assert len(data.ctr) == int((pairs["label"] == 1).sum()) - positives_in_test
    # the same day read later gives the same test set
    assert load_training_data(settings, "2026-10-11").llm_test["text_hash"].tolist() == data.llm_test["text_hash"].tolist()
    # before the first day there is nothing
    with pytest.raises(DataError, match="no LLM labels"):
        load_training_data(settings, "2026-10-01")


def test_too_few_store_rows(settings):
    write_lake_inputs(settings, make_pairs(20, with_ids=True), ctr=False)
    with pytest.raises(DataError, match="min_rows"):
        load_training_data(settings, DS)


def test_labels_file_without_category_and_numeric_looking_text(tmp_path):
    """No category column (many catalogs): accepted, empty. Keyphrases such as 007 or 1e3 stay text."""
    df = make_pairs(60).drop(columns=["category"])
    df["keyphrase"] = [f"{i:03d}" for i in range(60)]  # a whole column that looks numeric
    df.loc[1, "keyphrase"] = "1e3"
    out = read_labels_file(_write(tmp_path, df), min_rows=50)
    assert (out["category"] == "").all()
    assert out.loc[0, "keyphrase"] == "000" and out.loc[7, "keyphrase"] == "007" and out.loc[1, "keyphrase"] == "1e3"


def test_labels_file_held_out_split_is_by_keyphrase(tmp_path, settings):
    """A user's file is split by keyphrase: no query on both sides, so early stopping and the stored
    threshold are measured on queries the model has not seen."""
    df = make_pairs(300)
    df["keyphrase"] = df["keyphrase"] + " " + (df.index % 60).astype(str)
    data = load_training_data(settings, DS, labels=_write(tmp_path, df))
    train_kps, test_kps = set(data.llm_train["keyphrase"]), set(data.llm_test["keyphrase"])
    assert train_kps and test_kps and not (train_kps & test_kps)


def test_labels_file_of_one_keyphrase_names_the_split_by_keyphrase(tmp_path, settings):
    """Every pair on one side of the split: the error says the split is by keyphrase and how many the file has."""
    df = make_pairs(120).assign(keyphrase="usb c charger")
    with pytest.raises(DataError, match=r"gave (0|120) test pairs.*the split is by keyphrase, and the file has 1 "
                                        r"distinct keyphrase\(s\)"):
        load_training_data(settings, DS, labels=_write(tmp_path, df))


def _ctr_labels(path, n: int, seed: int = 0):
    import numpy as np

    from keyphrase_pipeline.core.lake import write_parquet_atomic

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"item_id": rng.integers(0, 10 ** 9, n).astype("int64"),
                       "keyphrase_id": rng.integers(0, 10 ** 6, n).astype("int64"),
                       "impressions": np.int64(100), "clicks": np.int64(5), "ctr": 0.05,
                       "label": (np.arange(n) % 2).astype("int32")})
    write_parquet_atomic(df, str(path))
    return df


def test_capped_pairs_keeps_the_pairs_with_the_smallest_hash_and_reads_all_under_the_cap(tmp_path):
    """CTR positives beyond train.max_ctr_positives: exactly the cap, the same sample on every run (the smallest
    pair hashes), positives only; under the cap, every positive (issue 32: training memory set by the cap)."""
    import numpy as np

    from keyphrase_pipeline.core.hashing import pair_hash
    from keyphrase_pipeline.labels.training_data import capped_pairs

    df = _ctr_labels(tmp_path / "ctr", 10_000)
    pos = df[df["label"] == 1]
    got, total = capped_pairs(str(tmp_path / "ctr"), "ctr_labels", 1_000, positives_only=True, batch_rows=997)
    assert total == len(pos) == 5_000 and len(got) == 1_000 and (got["label"] == 1).all()
    smallest = np.sort(pair_hash(pos["item_id"], pos["keyphrase_id"]))[:1_000]
    assert np.array_equal(np.sort(pair_hash(got["item_id"], got["keyphrase_id"])), smallest)
    again, _ = capped_pairs(str(tmp_path / "ctr"), "ctr_labels", 1_000, positives_only=True)
    assert again.equals(got)
    every, total = capped_pairs(str(tmp_path / "ctr"), "ctr_labels", 20_000)
    assert total == 10_000 and len(every) == 10_000 and str(every["item_id"].dtype) == "int64"


def test_capped_pairs_holds_about_cap_rows_and_is_exact_when_the_threshold_keeps_too_few(tmp_path, monkeypatch):
    """Memory: only the rows under the hash threshold are gathered (about cap + 6 sqrt(cap) + 100), never the
    dataset; and a threshold that keeps fewer than cap (hashes bunched high) is widened until it keeps cap."""
    import numpy as np
    import pyarrow as pa

    from keyphrase_pipeline.labels import training_data

    _ctr_labels(tmp_path / "ctr", 10_000)
    gathered = []
    concat = pa.concat_tables

    def spy(tables, *a, **kw):
        out = concat(tables, *a, **kw)
        gathered.append(out.num_rows)
        return out

    monkeypatch.setattr(pa, "concat_tables", spy)
    got, _ = training_data.capped_pairs(str(tmp_path / "ctr"), "ctr_labels", 1_000)
    assert len(got) == 1_000 and max(gathered) <= 1_000 + 6 * 1_000 ** 0.5 + 100 + 200
    monkeypatch.setattr(training_data, "pair_hash",  # every hash in the top 1/1000th of the range
                        lambda i, k: np.uint64(2 ** 64 - 1) - np.asarray(i, dtype=np.int64).view(np.uint64) % np.uint64(
                            2 ** 50))
    got, total = training_data.capped_pairs(str(tmp_path / "ctr"), "ctr_labels", 1_000)
    assert total == 10_000 and len(got) == 1_000


def test_capped_pairs_leaves_out_rows_with_a_null_id(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.labels.training_data import capped_pairs

    (tmp_path / "sr").mkdir()
    pq.write_table(pa.table({"item_id": pa.array([1, None, 3], pa.int64()), "keyphrase_id": pa.array([7, 8, None], pa.int64()),
                             "score": [0.9, 0.8, 0.7], "label": pa.array([1, 1, 0], pa.int32())}),
                   tmp_path / "sr" / "part-0.parquet")
    got, total = capped_pairs(str(tmp_path / "sr"), "sr_labels", 10)
    assert total == 1 and got["item_id"].tolist() == [1]
    # unsigned ids past int64 (no catalog row can hold them) are left out, not a cast error
    (tmp_path / "u64").mkdir()
    pq.write_table(pa.table({"item_id": pa.array([5, 2 ** 64 - 1], pa.uint64()), "keyphrase_id": pa.array([7, 8], pa.uint64()),
                             "score": [0.9, 0.8], "label": pa.array([1, 1], pa.int32())}), tmp_path / "u64" / "part-0.parquet")
    got, total = capped_pairs(str(tmp_path / "u64"), "sr_labels", 10)
    assert total == 1 and got["item_id"].tolist() == [5] and str(got["item_id"].dtype) == "int64"


def test_lake_ctr_positives_are_capped_and_only_their_texts_are_read(settings, monkeypatch):
    """A small train.max_ctr_positives caps the student's CTR positives (the snapshot says how many of how many), and
    the texts come from only the catalog rows the pairs name, not the snapshot whole."""
    from keyphrase_pipeline.core.lake import Lake, read_parquet, write_parquet_atomic
    from keyphrase_pipeline.labels import training_data

    pairs = make_pairs(600, seed=4, with_ids=True)
    write_lake_inputs(settings, pairs)
    lake = Lake.from_settings(settings)
    catalog = read_parquet(lake.path("catalog", ds=DS))
    extra = catalog.head(1).loc[[0] * 500].reset_index(drop=True)
    extra["item_id"] = range(10 ** 6, 10 ** 6 + 500)
    write_parquet_atomic(pd.concat([catalog, extra], ignore_index=True), lake.path("catalog", ds=DS))
    seen = {}
    texts = training_data._texts

    def spy(*a, **kw):
        seen["catalog"], seen["keyphrases"] = out = texts(*a, **kw)
        return out

    monkeypatch.setattr(training_data, "_texts", spy)
    n_pos = int((pairs["label"] == 1).sum())
    capped = settings.with_overrides(**{"train.max_ctr_positives": 30})
    data = load_training_data(capped, DS)
    assert data.snapshot["ctr_positives_read"] == {"rows": 30, "of": n_pos}
    assert 0 < len(data.ctr) <= 30
    assert set(seen["catalog"]["item_id"]) <= set(pairs["item_id"]) and len(seen["catalog"]) <= 30
    assert len(seen["keyphrases"]) <= 30
    full = load_training_data(settings, DS)
    assert full.snapshot["ctr_positives_read"] == {"rows": n_pos, "of": n_pos} and len(full.ctr) > len(data.ctr)
    assert "no_text" not in full.snapshot["dropped_texts"]["ctr"]
    # positives whose item left the catalog snapshot are counted, not lost silently
    gone = set(pairs.loc[pairs["label"] == 1, "item_id"].head(40))
    kept = catalog[~catalog["item_id"].isin(gone)]
    write_parquet_atomic(kept, lake.path("catalog", ds=DS))
    monkeypatch.setattr(training_data, "_texts", texts)
    part = load_training_data(settings, DS)
    lost = full.snapshot["ctr_positive_rows"] - part.snapshot["ctr_positive_rows"]
    assert lost > 0 and part.snapshot["dropped_texts"]["ctr"]["no_text"] >= lost


def test_labels_file_repeating_a_column_is_refused(tmp_path):
    """pandas would read the second ``label`` as ``label.1`` and train on the first: which one was meant is a guess."""
    p = tmp_path / "pairs.csv"
    df = make_pairs(60)
    df.assign(label2=1 - df["label"]).rename(columns={"label2": "label"}).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"--labels .*: column name\(s\) \['label'\] appear more than once"):
        read_labels_file(str(p), 10)
