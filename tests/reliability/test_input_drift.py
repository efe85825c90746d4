"""Input partitions holding files from different writers (issue 27), and lake roots Spark reads as patterns.

One partition gets a late file written by another tool: pandas' ``to_parquet`` (nanosecond timestamps, int64
positions, its own column order), a writer with zoned timestamps and int32 ids, a writer that renamed a
column, one that wrote ids as text. What loses nothing is conformed and read with the right values; the
rest is refused before Spark reads anything, naming the file and the column, by every stage that reads the
input and by ``kp inputs`` / the DAG's input sensor alike."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyphrase_pipeline.core.contracts import arrow_schema
from keyphrase_pipeline.core.errors import ConfigError, SchemaError
from keyphrase_pipeline.core.lake import Lake, read_parquet
from keyphrase_pipeline.stages import ctr_labels, embed, select_pairs

DS = "2026-10-12"


def _canonical(df: pd.DataFrame, contract: str, folder: Path, name: str = "part-00000.parquet") -> Path:
    """A file as the pipeline's own writers write it (the contract's physical types)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, schema=arrow_schema(contract), preserve_index=False), folder / name)
    return folder / name


def _rows(contract: str, n: int, start: int = 0) -> pd.DataFrame:
    """``n`` valid rows of an input contract (every column of ``arrow_schema(contract)``)."""
    ids = list(range(start + 1, start + n + 1))
    t = [pd.Timestamp(f"{DS} 0{i % 9}:00:00") for i in range(n)]
    return {
        "events": lambda: pd.DataFrame({"event_id": [f"e{i}" for i in ids], "ts": t, "item_id": ids,
                                        "keyphrase_id": [10 + i for i in ids], "query": "mug",
                                        "event": "impression", "position": 1}),
        "catalog": lambda: pd.DataFrame({"item_id": ids, "title": [f"mug {i}" for i in ids], "category": "home",
                                         "updated_at": t, "active": True}),
        "keyphrases": lambda: pd.DataFrame({"keyphrase_id": ids, "text": [f"kp {i}" for i in ids],
                                            "search_volume": 5}),
        "sr_input": lambda: pd.DataFrame({"item_id": ids, "keyphrase_id": [10 + i for i in ids], "score": 0.5,
                                          "label": 1}),
    }[contract]()


def _partition(settings, contract: str) -> Path:
    lake = Lake.from_settings(settings)
    return Path(lake.path(contract) if contract == "keyphrases" else lake.path(contract, ds=DS))


class NoSpark:
    """Stands for the SparkSession where the footer check must refuse before Spark is asked anything."""

    def __getattr__(self, name):
        raise AssertionError(f"spark.{name} used before the files' schemas were checked")


@pytest.mark.spark
def test_files_of_other_writers_are_conformed_and_read_with_their_exact_values(settings, spark):
    """A day of search logs in three files: the pipeline's own (naive us timestamps), pandas' ``to_parquet``
    (ns timestamps, one with sub-microsecond digits; int64 position; another column order) and a writer with
    Europe/Paris timestamps and int32 ids. Spark refuses the ns file as written (PARQUET_TYPE_ILLEGAL)."""
    part = _partition(settings, "events")
    own = pd.DataFrame({"event_id": ["a1", "a2"], "ts": pd.to_datetime([f"{DS} 01:00:00", f"{DS} 01:30:00"]),
                        "item_id": [1, 2], "keyphrase_id": [10, 20], "query": None,
                        "event": ["impression", "impression"], "position": [1, 2]})
    _canonical(own, "events", part)
    late = pd.DataFrame({"position": [3, 1], "event": ["impression", "click"], "keyphrase_id": [10, 10],
                         "item_id": [1, 1], "event_id": ["p1", "p2"],
                         "ts": pd.to_datetime([f"{DS} 02:00:00.000000001", f"{DS} 02:00:30.123456789"])})
    late.to_parquet(part / "late-pandas.parquet")  # pandas' defaults: timestamp[ns], int64
    assert pq.read_schema(part / "late-pandas.parquet").field("ts").type == pa.timestamp("ns")
    paris = pa.table({"event_id": ["z1"], "item_id": pa.array([1], pa.int32()),
                      "keyphrase_id": pa.array([10], pa.int32()),
                      "ts": pa.array([pd.Timestamp(f"{DS} 10:00:00.250000", tz="Europe/Paris")],
                                     pa.timestamp("us", tz="Europe/Paris")),
                      "event": ["impression"], "position": pa.array([1], pa.int32())})
    pq.write_table(paris, part / "zoned.parquet")

    stats = ctr_labels.aggregate_day(spark, settings, DS)

    assert stats["rows_in"] == 5 and stats["rows_quarantined"] == 0, stats  # no ts read outside the day
    lake = Lake.from_settings(settings)
    daily = read_parquet(lake.path("ctr_daily", ds=DS)).sort_values(["item_id", "keyphrase_id"])
    assert daily[["item_id", "keyphrase_id", "impressions", "clicks"]].values.tolist() == [[1, 10, 3, 1], [2, 20, 1, 0]]

    from keyphrase_pipeline.core.spark import read_input

    rows = {r["event_id"]: r for r in read_input(spark, lake, [str(part)], "events", "events").collect()}
    assert rows["a1"]["ts"] == dt.datetime(2026, 10, 12, 1, 0)
    assert rows["p1"]["ts"] == dt.datetime(2026, 10, 12, 2, 0)  # 1 ns: below Spark's microsecond, truncated
    assert rows["p2"]["ts"] == dt.datetime(2026, 10, 12, 2, 0, 30, 123456)
    assert rows["z1"]["ts"] == dt.datetime(2026, 10, 12, 8, 0, 0, 250000)  # 10:00:00.25 CEST is 08:00:00.25 UTC
    assert rows["p2"]["position"] == 1 and rows["z1"]["item_id"] == 1


def test_pandas_readers_get_the_same_types_and_values_whichever_file_comes_first(settings):
    """``read_parquet`` (training data, evaluation, index) took the first file's schema for the folder: a late
    pandas file listed first made every timestamp zoned nanoseconds and ids int32."""
    part = _partition(settings, "catalog")
    own = _rows("catalog", 2)
    _canonical(own, "catalog", part)
    clean = read_parquet(str(part), contract="catalog")
    late = _rows("catalog", 1, start=2).astype({"item_id": "int32"})
    late["updated_at"] = pd.Timestamp(f"{DS} 09:15:00.5", tz="Europe/Paris")
    late[["title", "active", "updated_at", "category", "item_id"]].to_parquet(part / "a-late.parquet")

    got = read_parquet(str(part), contract="catalog").sort_values("item_id").reset_index(drop=True)
    assert got.dtypes.to_dict() == clean.dtypes.to_dict()
    assert got["item_id"].tolist() == [1, 2, 3]
    assert got["updated_at"].tolist() == own["updated_at"].tolist() + [pd.Timestamp(f"{DS} 07:15:00.5")]  # UTC


ENTRY_POINTS = {
    # (contract, column renamed, new name): a stage entry that reads the input
    "ctr_labels events": ("events", "keyphrase_id", "kp_id", lambda s: ctr_labels.aggregate_day(NoSpark(), s, DS)),
    "ctr_labels sr_labels": ("sr_input", "keyphrase_id", "kp_id",
                             lambda s: ctr_labels.pass_through_sr_labels(NoSpark(), s, DS)),
    "select_pairs catalog": ("catalog", "item_id", "id", lambda s: select_pairs.run(s, DS, spark=NoSpark())),
    "embed items": ("catalog", "title", "name",
                    lambda s: embed._source_texts(NoSpark(), Lake.from_settings(s), DS, "items")),
    "embed keyphrases": ("keyphrases", "keyphrase_id", "kp_id",
                         lambda s: embed._source_texts(NoSpark(), Lake.from_settings(s), DS, "keyphrases")),
    "read_parquet keyphrases (training data, evaluate, index)": (
        "keyphrases", "keyphrase_id", "kp_id",
        lambda s: read_parquet(Lake.from_settings(s).path("keyphrases"), contract="keyphrases")),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_column_renamed_in_one_late_file_is_refused_by_every_reader_naming_the_file_and_column(settings, entry):
    """Spark read the folder with the first file's schema: the renamed column's rows came out null and were
    quarantined as ``null_key``, the cause lost. Now every reader refuses before Spark is asked anything."""
    contract, column, renamed, read = ENTRY_POINTS[entry]
    part = _partition(settings, contract)
    _canonical(_rows(contract, 3), contract, part)
    _rows(contract, 2, start=3).rename(columns={column: renamed}).to_parquet(part / "part-late.parquet")

    with pytest.raises(SchemaError) as err:
        read(settings)
    assert err.value.exit_code == 3
    assert f"{part}/part-late.parquet" in str(err.value) and f"missing column {column!r}" in str(err.value)
    assert renamed in str(err.value)  # the file's columns are listed: the rename is visible


def test_a_column_of_another_type_is_refused_naming_the_file_and_column(settings):
    part = _partition(settings, "catalog")
    _canonical(_rows("catalog", 3), "catalog", part)
    _rows("catalog", 2, start=3).astype({"item_id": str}).to_parquet(part / "part-late.parquet")  # ids as text
    with pytest.raises(SchemaError, match=r"part-late\.parquet: column 'item_id' has type string, expected int64"):
        read_parquet(str(part), contract="catalog")


def test_kp_inputs_and_the_sensor_refuse_the_day_the_stages_would_refuse(settings, monkeypatch, capsys):
    from airflow.sdk.exceptions import AirflowFailException

    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings, settings_env
    from keyphrase_pipeline.orchestration import planning

    for contract in ("catalog", "keyphrases", "events"):
        _canonical(_rows(contract, 3), contract, _partition(settings, contract))
    late = _partition(settings, "events") / "part-late.parquet"
    _rows("events", 2, start=3).to_parquet(late)  # pandas' ns timestamps: conformed, fine
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        assert cli.main(["inputs", "--ds", DS]) == 0
        status = _status_line(capsys.readouterr().out)
        assert status["ready"] and status["conformed"] == [
            {"file": str(late), "columns": ["ts: timestamp[ns] -> timestamp[us]", "position: int64 -> int32"]}]

        _rows("events", 2, start=3).rename(columns={"keyphrase_id": "kp_id"}).to_parquet(late)
        assert cli.main(["inputs", "--ds", DS]) == 3
        out = capsys.readouterr()
        status = _status_line(out.out)
        assert status["ready"] is False and status["invalid"][0]["path"] == str(_partition(settings, "events"))
        logged = out.err + out.out  # once Airflow configured logging, its structlog prints to stdout
        assert f"{late}: missing column 'keyphrase_id'" in logged and "kp_id" in logged
        with pytest.raises(AirflowFailException, match=r"part-late\.parquet: missing column 'keyphrase_id'"):
            planning.wait_for_input({}, DS)

        late.write_bytes(late.read_bytes()[:100])  # a file still being written: wait for it, do not fail the day
        poke = planning.wait_for_input({}, DS)
        assert poke.is_done is False and poke.xcom_value["invalid"][0]["schema"] is False
    finally:
        get_settings.cache_clear()


def _status_line(out: str) -> dict:
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))


@pytest.mark.parametrize("char", ["[", "]", "{", "}", "*"])
def test_a_lake_root_spark_would_read_as_a_pattern_is_refused_when_settings_load(tmp_path, monkeypatch, char):
    """Spark reads ``/x/lake[1]`` as a glob: PATH_NOT_FOUND on every read, after ``kp inputs`` said ready."""
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings, load_settings

    root = tmp_path / f"lake{char}1"
    with pytest.raises(ConfigError, match=rf"lake_root: .*'\{char}' in") as err:
        load_settings(lake_root=str(root))
    assert err.value.exit_code == 2
    monkeypatch.setenv("KP_LAKE_ROOT", str(root))
    get_settings.cache_clear()
    try:
        assert cli.main(["inputs", "--ds", DS]) == 2
    finally:
        get_settings.cache_clear()
