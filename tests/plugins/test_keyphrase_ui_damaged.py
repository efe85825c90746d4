"""The Keyphrases page on a lake a reviewer damaged by hand (stray run folders, junk parquet files, a broken
failure record, a champion pointer to a missing version, huge inputs): every route answers with what it can
and a note naming what it left out, never a 500."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ui_helpers import write_run_day


def auth(api):
    return {"Authorization": f"Bearer {api['token']}"}


def _copy_lake(api, tmp_path, lake_env):
    """A writable copy of the fixture's lake (embeddings left out), served by the plugin."""
    from keyphrase_pipeline.core.lake import Lake

    root = tmp_path / "lake"
    shutil.copytree(api["root"], root, ignore=shutil.ignore_patterns("embeddings"))
    lake_env(root)
    return Lake(str(root))


def _junk(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(("_", ".")))
    assert files, folder
    for f in files:
        f.write_text("junk\n")
    return files


# ---- 1 and 4: run folders that are not a date, or hold no record -------------------------------------------------
def _runs_lake(tmp_path, lake_env):
    from keyphrase_pipeline.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    for ds in ("2026-11-08", "2026-11-09", "2026-11-10"):
        write_run_day(lake, ds)
    runs = Path(lake.path("runs"))
    (runs / "ds=notadate").mkdir()
    (runs / "ds=2026-99-99").mkdir()
    (runs / "ds=2026-99-99" / "publish.json").write_text('{"recommendations": 1}')
    lake_env(lake.root)
    return lake


def test_run_folders_that_are_not_dates_are_ignored_with_a_note(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    _runs_lake(tmp_path, lake_env)
    for route in ("overview", "runs", "history?days=3", "plots/history.png?days=3"):
        r = c.get(f"/keyphrases/api/{route}", headers=h)
        assert r.status_code == 200, (route, r.text[:300])
    o = c.get("/keyphrases/api/overview", headers=h).json()
    assert o["runs"]["ds"] == "2026-11-10" and o["runs"]["days"] == ["2026-11-08", "2026-11-09", "2026-11-10"]
    texts = [m["text"] for m in o["messages"]]
    for name in ("notadate", "2026-99-99"):
        assert sum(f"ignored runs/ds={name}: not a date" in t for t in texts) == 1, texts
    notes = c.get("/keyphrases/api/history?days=3", headers=h).json()["notes"]
    assert sum("ignored runs/ds=notadate: not a date" in n for n in notes) == 1, notes
    assert c.get("/keyphrases/api/runs", headers=h).json()["ds"] == "2026-11-10"


def test_an_empty_future_run_folder_is_not_the_newest_day(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _runs_lake(tmp_path, lake_env)
    Path(lake.path("runs"), "ds=2027-01-01").mkdir()
    body = c.get("/keyphrases/api/history?days=3", headers=h).json()
    assert body["end"] == "2026-11-10"
    assert [d["ds"] for d in body["days"]] == ["2026-11-10", "2026-11-09", "2026-11-08"]
    assert all(d["status"] == "ok" for d in body["days"]), [d["status"] for d in body["days"]]
    assert any("runs/ds=2027-01-01: no stats" in n for n in body["notes"]), body["notes"]
    assert c.get("/keyphrases/api/overview", headers=h).json()["runs"]["ds"] == "2026-11-10"
    r = c.get("/keyphrases/api/runs?ds=2027-01-01", headers=h)
    assert r.status_code == 404 and "No run recorded for ds=2027-01-01" in r.json()["detail"]


# ---- 2: a damaged label store or CTR file ---------------------------------------------------------------------
def test_damaged_label_store_and_ctr_files_leave_their_columns_out_with_a_note(airflow_api, lake_env, tmp_path):
    import pandas as pd

    from keyphrase_pipeline.artifacts import serving

    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    ds = airflow_api["ds"]
    recs = pd.read_parquet(serving.current_recommendations_path(airflow_api["settings"]))
    item, kp = int(recs["item_id"].iloc[0]), int(recs["keyphrase_id"].iloc[0])
    store = _junk(Path(lake.path("llm_store", ds=ds)))
    ctr_day = lake.partitions("ctr_labels")[-1]
    ctr = _junk(Path(lake.path("ctr_labels", ds=ctr_day)))

    r = c.get(f"/keyphrases/api/item/{item}?k=10", headers=h)
    assert r.status_code == 200, r.text[:400]
    body = r.json()
    assert len(body["results"]) == 10 and all(x["llm"] is None and x["ctr"] is None for x in body["results"])
    notes = " ".join(body["notes"])
    assert f"llm_labels/store/ds={ds}/{store[0].name}: ArrowInvalid" in notes and "kp merge-labels" in notes
    assert f"ctr_labels/ds={ctr_day}/{ctr[0].name}" in notes and f"kp ctr-labels --ds {ctr_day}" in notes
    assert "ArrowInvalid:" not in r.text and str(lake.root) not in r.text  # the file's lake path, not raw pyarrow text

    r = c.get(f"/keyphrases/api/keyphrase/{kp}", headers=h)
    assert r.status_code == 200, r.text[:400]
    assert r.json()["total_items"] >= 1 and any("llm_labels/store" in n for n in r.json()["notes"])

    r = c.get("/keyphrases/api/reviews", headers=h)
    assert r.status_code == 200, r.text[:400]
    assert r.json()["sample"] == [] and any(f"llm_labels/store/ds={ds} cannot be read" in n and "kp merge-labels" in n
                                            for n in r.json()["notes"])


# ---- 3: one bad review file --------------------------------------------------------------------------------------
def test_one_bad_review_file_is_left_out_and_named_and_the_plot_still_draws(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    body = c.get("/keyphrases/api/reviews", headers=h).json()
    pair = body["sample"][0]["pair_key"]
    r = c.post("/keyphrases/api/reviews", json={"ds": body["ds"], "pair_key": pair, "verdict": "agree"}, headers=h)
    assert r.status_code == 201
    Path(lake.path("label_reviews", ds=body["ds"]), "part-zzzz.parquet").write_text("junk\n")
    after = c.get("/keyphrases/api/reviews", headers=h).json()
    row = next(x for x in after["sample"] if x["pair_key"] == pair)
    assert row["verdicts"] == {"agree": 1, "disagree": 0} and row["my_verdict"] == "agree"
    assert after["agreement"] and after["agreement"][0]["reviews"] == 1
    assert any("1 unreadable review file(s)" in n and "part-zzzz.parquet" in n for n in after["notes"]), after["notes"]
    png = c.get("/keyphrases/api/plots/reviews.png", headers=h)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


# ---- 6: small ones -------------------------------------------------------------------------------------------
def test_empty_lake_runs_message_says_what_to_do(airflow_api, lake_env, tmp_path):
    lake_env(tmp_path / "empty")
    msg = airflow_api["client"].get("/keyphrases/api/runs", headers=auth(airflow_api)).json()["message"]
    assert "(latest)" not in msg and "No run recorded yet" in msg and "Trigger the keyphrase_daily DAG" in msg


def test_unknown_item_is_404_in_both_views_without_the_lake_path(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    for route in ("/keyphrases/api/item/987654321", "/keyphrases/api/search?item_id=987654321"):
        r = c.get(route, headers=h)
        assert r.status_code == 404, (route, r.text[:300])
        detail = r.json()["detail"]
        assert "item 987654321 is not in the latest catalog snapshot" in detail, detail
        assert str(airflow_api["root"]) not in detail and "/raw/catalog" not in detail


def test_a_corrupt_failure_record_is_said_to_be_unreadable(airflow_api, lake_env, tmp_path):
    from keyphrase_pipeline.core.lake import Lake

    c, h = airflow_api["client"], auth(airflow_api)
    lake = Lake(str(tmp_path / "lake"))
    write_run_day(lake, "2026-11-10", skip=("publish",))
    for stage in ("index", "publish"):
        p = Path(lake.run_failure_path("2026-11-10", stage))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{truncated")
    lake_env(lake.root)
    day = c.get("/keyphrases/api/history?days=1", headers=h).json()["days"][0]
    index, publish = day["stages"]["index"], day["stages"]["publish"]
    assert index["status"] == "ok" and "failure record is unreadable" in index["reason"] and "None" not in index["reason"]
    assert publish["status"] == "failed" and "failure record is unreadable" in publish["reason"]
    assert "None" not in publish["reason"]


def test_curves_of_a_missing_champion_are_404_not_another_versions(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    lake.write_pointer(lake.path("registry", "CHAMPION"), "2026-01-01-deadbeef")
    r = c.get("/keyphrases/api/plots/curves.png", headers=h)
    assert r.status_code == 404, r.status_code
    assert "registry/CHAMPION points to 2026-01-01-deadbeef" in r.json()["detail"] and "?version=" in r.json()["detail"]
    ok = c.get(f"/keyphrases/api/plots/curves.png?version={airflow_api['challenger']}", headers=h)
    assert ok.status_code == 200 and ok.content[:4] == b"\x89PNG"


def test_a_422_does_not_echo_a_huge_input(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    r = c.get(f"/keyphrases/api/items?q={'x' * 60_000}", headers=h)  # about what a URL can carry
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    assert "... (60,000 characters, cut)" in r.text and r.json()["detail"][0]["loc"] == ["query", "q"]
    r = c.post("/keyphrases/api/reviews", json={"ds": "2026-10-01", "pair_key": "a" * 100_000, "verdict": "agree"},
               headers=h)
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    assert "100,000 characters, cut" in r.text and "pair_key" in r.text


# ---- 7: reviewed pairs exported as a --labels file ----------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reviews_export_as_a_labels_file_the_training_reader_reads(airflow_api, lake_env, tmp_path, suffix, capsys):
    import datetime as dt
    import json

    import pandas as pd

    from keyphrase_pipeline.cli import main
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels import reviews as label_reviews
    from keyphrase_pipeline.labels.training_data import read_labels_file
    from keyphrase_pipeline.models.text import clean

    root = tmp_path / "lake"
    shutil.copytree(Path(airflow_api["root"]) / "llm_labels", root / "llm_labels")
    lake_env(root)
    s, ds = airflow_api["settings"].with_overrides(lake_root=str(root)), airflow_api["ds"]
    pairs = label_reviews.sample(s, ds, 3)
    a, b, c_ = (pairs.iloc[i] for i in range(3))
    t0 = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    label_reviews.append(s, ds, a["pair_key"], "agree", "ann", now=t0)
    label_reviews.append(s, ds, a["pair_key"], "disagree", "bob", now=t0 + dt.timedelta(hours=1))  # newest wins
    label_reviews.append(s, ds, b["pair_key"], "disagree", "ann", now=t0)
    label_reviews.append(s, ds, b["pair_key"], "agree", "ann", now=t0 + dt.timedelta(hours=2))   # changed mind
    label_reviews.append(s, ds, c_["pair_key"], "disagree", "bob", now=t0)
    Path(Lake(str(root)).path("label_reviews", ds=ds), "part-zzzz.parquet").write_text("junk\n")

    out = tmp_path / f"human{suffix}"
    assert main(["label-reviews", "--export", str(out), "--from", ds, "--to", ds]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["pairs"] == 3 and stats["agree"] == 1 and stats["disagree"] == 2 and stats["verdicts_read"] == 5
    assert len(stats["skipped_files"]) == 1 and "part-zzzz.parquet" in stats["skipped_files"][0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".", "_tmp"))]  # atomic: no temp file left

    got = read_labels_file(str(out), min_rows=1)
    want = {(clean(r["title"]), clean(r["category"]), clean(r["keyphrase"])): lab for r, lab in
            ((a, 1 - int(a["label"])), (b, int(b["label"])), (c_, 1 - int(c_["label"])))}
    assert {(r.title, r.category, r.keyphrase): int(r.label) for r in got.itertuples()} == want
    assert sorted(got["item_id"]) == sorted(int(r["item_id"]) for r in (a, b, c_))

    h = auth(airflow_api)
    api = airflow_api["client"].get(f"/keyphrases/api/reviews/export?from={ds}", headers=h)
    assert api.status_code == 200 and api.headers["content-type"].startswith("text/csv")
    csv = pd.read_csv(__import__("io").StringIO(api.text), keep_default_na=False, dtype=str)
    assert sorted(csv["pair_key"]) == sorted(r["pair_key"] for r in (a, b, c_))
    assert main(["label-reviews", "--export", str(tmp_path / "none.csv"), "--from", "2030-01-01"]) == 3
    assert main(["label-reviews", "--export", str(tmp_path / "x.json")]) == 2
    assert airflow_api["client"].get("/keyphrases/api/reviews/export?from=2030-01-01", headers=h).status_code == 404


# ---- review-pass 3: a wrong-schema review file, a junk store file, an undecodable pointer, big echoes, CTR window --
def test_a_review_file_without_the_contracts_columns_is_skipped_and_named(airflow_api, lake_env, tmp_path, capsys):
    import json

    import pandas as pd

    from keyphrase_pipeline.cli import main

    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    body = c.get("/keyphrases/api/reviews", headers=h).json()
    pair = body["sample"][0]["pair_key"]
    assert c.post("/keyphrases/api/reviews", json={"ds": body["ds"], "pair_key": pair, "verdict": "agree"},
                  headers=h).status_code == 201
    pd.DataFrame({"x": [1, 2]}).to_parquet(Path(lake.path("label_reviews", ds=body["ds"]), "part-w.parquet"))
    after = c.get("/keyphrases/api/reviews", headers=h).json()
    assert any("1 unreadable review file(s)" in n and f"label_reviews/ds={body['ds']}/part-w.parquet" in n
               for n in after["notes"]), after["notes"]
    assert str(lake.root) not in json.dumps(after["notes"])
    assert after["agreement"][0]["reviews"] == 1
    r = c.get("/keyphrases/api/reviews/export", headers=h)
    assert r.status_code == 200, r.text[:400]
    assert r.headers["X-Skipped-Review-Files"] == "1" and pair in r.text
    out = tmp_path / "x.csv"
    assert main(["label-reviews", "--export", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["pairs"] == 1 and len(stats["skipped_files"]) == 1, stats
    assert stats["skipped_files"][0].startswith(f"label_reviews/ds={body['ds']}/part-w.parquet: SchemaError")
    assert str(lake.root) not in stats["skipped_files"][0]


def test_a_verdict_is_stored_when_the_store_day_has_a_junk_file(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    ds = airflow_api["ds"]
    pair = c.get("/keyphrases/api/reviews", headers=h).json()["sample"][0]["pair_key"]
    store = Path(lake.path("llm_store", ds=ds))
    (store / "part-junk.parquet").write_text("junk\n")
    r = c.post("/keyphrases/api/reviews", json={"ds": ds, "pair_key": pair, "verdict": "disagree"}, headers=h)
    assert r.status_code == 201, r.text[:400]
    assert r.json()["verdict"] == "disagree" and r.json()["pair_key"] == pair
    _junk(store)  # now no file of the day can be read: the pair cannot be checked
    r = c.post("/keyphrases/api/reviews", json={"ds": ds, "pair_key": pair, "verdict": "agree"}, headers=h)
    assert r.status_code == 409, (r.status_code, r.text[:400])
    detail = r.json()["detail"]
    assert f"llm_labels/store/ds={ds}/part-junk.parquet" in detail and "kp merge-labels --ds" in detail, detail
    assert str(lake.root) not in detail


def test_an_undecodable_champion_pointer_is_reported_and_versions_still_listed(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    Path(lake.path("registry", "CHAMPION")).write_bytes(b"\x00\xff garbage")
    o = c.get("/keyphrases/api/overview", headers=h)
    assert o.status_code == 200, o.text[:300]
    o = o.json()
    assert {v["version"] for v in o["versions"]} >= {airflow_api["version"], airflow_api["challenger"]}
    texts = [m["text"] for m in o["messages"]]
    assert not any("No model trained yet" in t for t in texts), texts
    assert any("registry/CHAMPION is unreadable" in t and "kp promote --version" in t for t in texts), texts
    cmp_ = c.get("/keyphrases/api/compare", headers=h).json()
    assert "registry/CHAMPION is unreadable" in cmp_["message"] and "No model trained yet" not in cmp_["message"]
    r = c.get("/keyphrases/api/plots/curves.png", headers=h)
    assert r.status_code == 404 and "registry/CHAMPION is unreadable" in r.json()["detail"], r.text[:300]
    assert c.get(f"/keyphrases/api/plots/curves.png?version={airflow_api['challenger']}", headers=h).status_code == 200


def test_the_export_404_names_store_files_relative_to_the_lake(airflow_api, lake_env, tmp_path):
    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    ds = airflow_api["ds"]
    pair = c.get("/keyphrases/api/reviews", headers=h).json()["sample"][0]["pair_key"]
    assert c.post("/keyphrases/api/reviews", json={"ds": ds, "pair_key": pair, "verdict": "agree"},
                  headers=h).status_code == 201
    _junk(Path(lake.path("llm_store", ds=ds)))
    r = c.get("/keyphrases/api/reviews/export", headers=h)
    assert r.status_code == 404 and f"ds={ds}" in r.json()["detail"], r.text[:400]
    assert str(lake.root) not in r.json()["detail"], r.json()["detail"]


def test_a_422_does_not_echo_a_huge_list_or_object(airflow_api):
    c, h = airflow_api["client"], auth(airflow_api)
    big = ["x" * 10] * 10_000  # about 140 KB of JSON
    for body in (big, {"ds": big, "pair_key": "ab", "verdict": "agree"}):
        r = c.post("/keyphrases/api/reviews", json=body, headers=h)
        assert r.status_code == 422 and len(r.content) < 3_000, len(r.content)
        assert "characters, cut" in r.text


def test_the_item_views_ctr_window_is_the_one_the_ctr_day_was_computed_with(airflow_api, lake_env, tmp_path):
    import json

    import pandas as pd

    from keyphrase_pipeline.artifacts import serving
    from keyphrase_pipeline.core import layout

    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    item = int(pd.read_parquet(serving.current_recommendations_path(airflow_api["settings"]))["item_id"].iloc[0])
    ctr_day = lake.partitions("ctr_labels")[-1]
    stats_path = Path(layout.partition_stats_path(lake.path("ctr_labels", ds=ctr_day)))
    stats = json.loads(stats_path.read_text())
    assert airflow_api["settings"].ctr.window_days == 7
    stats_path.write_text(json.dumps({**stats, "window_days": 5}))
    body = c.get(f"/keyphrases/api/item/{item}?k=5", headers=h).json()
    assert body["ctr_window_days"] == 5 and "5-day impressions" in body["ctr_note"], body["ctr_note"]
    stats_path.unlink()
    body = c.get(f"/keyphrases/api/item/{item}?k=5", headers=h).json()
    assert body["ctr_window_days"] == 7 and "7-day impressions" in body["ctr_note"]
    assert "ctr.window_days setting" in body["ctr_note"] and "_stats.json" in body["ctr_note"], body["ctr_note"]


def test_the_item_views_store_note_names_the_real_day(airflow_api, lake_env, tmp_path):
    import pandas as pd

    from keyphrase_pipeline.artifacts import serving

    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    ds = airflow_api["ds"]
    item = int(pd.read_parquet(serving.current_recommendations_path(airflow_api["settings"]))["item_id"].iloc[0])
    (Path(lake.path("llm_store", ds=ds)) / "part-junk.parquet").write_text("junk\n")
    notes = " ".join(c.get(f"/keyphrases/api/item/{item}?k=5", headers=h).json()["notes"])
    assert f"kp merge-labels --ds {ds}" in notes and "--ds D`" not in notes, notes


# ---- review-pass 4: review rows whose values are not usable (a store day that is not a date, a verdict 'maybe') --
def test_review_rows_with_invalid_values_are_left_out_named_and_never_flip_a_label(airflow_api, lake_env, tmp_path,
                                                                                    capsys):
    """A review row with ``store_ds='not-a-date'`` made the agreement plot 500, broke the export ("no judged pairs
    for ds=not-a-date", no file named) and showed a day "not-a-date"; a newer verdict 'maybe' was read as a
    disagreement and flipped the exported label. Such rows are left out and their files named."""
    import datetime as dt
    import json
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    from keyphrase_pipeline.cli import main
    from keyphrase_pipeline.labels import reviews as label_reviews
    from keyphrase_pipeline.labels.training_data import read_labels_file
    from keyphrase_pipeline.models.text import clean

    c, h = airflow_api["client"], auth(airflow_api)
    lake = _copy_lake(airflow_api, tmp_path, lake_env)
    s, ds = airflow_api["settings"].with_overrides(lake_root=str(lake.root)), airflow_api["ds"]
    pairs = label_reviews.sample(s, ds, 2)
    a, b = pairs.iloc[0], pairs.iloc[1]
    t0 = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)
    label_reviews.append(s, ds, a["pair_key"], "agree", "ann", now=t0)
    label_reviews.append(s, ds, b["pair_key"], "agree", "ann", now=t0)
    folder = Path(lake.path("label_reviews", ds=ds))
    tables = [pq.read_table(f) for f in sorted(folder.glob("part-*.parquet"))]
    of_b = next(t for t in tables if t.column("pair_key")[0].as_py() == b["pair_key"])

    def forge(name, **values):
        df = of_b.to_pandas()
        df["review_id"] = uuid.uuid4().hex
        df["reviewed_at"] = df["reviewed_at"] + dt.timedelta(hours=1)  # newer than ann's verdicts
        df["reviewer"] = "eve"
        for k, v in values.items():
            df[k] = v
        pq.write_table(pa.Table.from_pandas(df, schema=of_b.schema, preserve_index=False), folder / name)

    forge("part-baddate.parquet", store_ds="not-a-date", verdict="disagree")
    forge("part-maybe.parquet", verdict="maybe")
    forge("part-badkey.parquet", pair_key="not hex!", verdict="disagree")

    body = c.get("/keyphrases/api/reviews", headers=h).json()
    assert [r["ds"] for r in body["agreement"]] == [ds] and body["agreement"][0]["reviews"] == 2, body["agreement"]
    notes = " ".join(body["notes"])
    assert "part-baddate.parquet" in notes and "store_ds 'not-a-date' is not a date" in notes, notes
    assert "part-maybe.parquet" in notes and "verdict 'maybe'" in notes, notes
    png = c.get("/keyphrases/api/plots/reviews.png", headers=h)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    out = tmp_path / "human.csv"
    assert main(["label-reviews", "--export", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["pairs"] == 2 and stats["agree"] == 2 and stats["disagree"] == 0, stats
    skipped = " ".join(stats["skipped_files"])
    assert len(stats["skipped_files"]) == 3 and f"label_reviews/ds={ds}/part-badkey.parquet" in skipped, skipped
    assert "pair_key 'not hex!'" in skipped and "1 of 1 row(s) left out" in skipped
    got = read_labels_file(str(out), min_rows=1)
    labels = {(r.title, r.category, r.keyphrase): int(r.label) for r in got.itertuples()}
    assert labels[(clean(b["title"]), clean(b["category"]), clean(b["keyphrase"]))] == int(b["label"])  # not flipped
    assert "maybe" not in out.read_text() and "eve" not in out.read_text()
