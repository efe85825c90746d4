"""A day's input check (``kp inputs``) and the DAG sensor's poke that uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from keyphrase_pipeline.commands import inputs
from keyphrase_pipeline.core.contracts import arrow_schema
from keyphrase_pipeline.core.lake import Lake

DS = "2026-10-05"


def _land(settings, dataset: str, ds: str | None = DS) -> Path:
    lake = Lake.from_settings(settings)
    folder = Path(lake.path(dataset, ds=ds) if ds else lake.path(dataset))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow_schema(dataset).empty_table(), folder / "part-00000.parquet")  # the contract's columns
    return folder


def _land_all(settings):
    _land(settings, "events")
    _land(settings, "catalog")
    _land(settings, "keyphrases", None)


def test_ready_when_every_input_has_a_data_file(settings):
    _land_all(settings)
    status = inputs.day_inputs(settings, DS)
    assert status["ready"] and status["missing"] == [] and len(status["present"]) == 3


def test_each_missing_input_is_named_with_what_needs_it(settings):
    _land(settings, "catalog")
    _land(settings, "keyphrases", None)
    _land(settings, "events", "2026-10-04")  # yesterday's log is not today's
    status = inputs.day_inputs(settings, DS)
    assert not status["ready"]
    assert [m["path"].rsplit("/", 2)[-2:] for m in status["missing"]] == [["events", f"ds={DS}"]]
    assert "CTR labels" in inputs.describe_missing(status)


def test_an_empty_or_marker_only_folder_is_not_input(settings):
    _land_all(settings)
    events = Path(Lake.from_settings(settings).path("events", ds=DS))
    (events / "part-00000.parquet").unlink()
    (events / "_SUCCESS").write_text("")
    (events / ".part-00001.parquet.crc").write_text("")
    assert not inputs.day_inputs(settings, DS)["ready"]
    (events / "sub").mkdir()
    pq.write_table(arrow_schema("events").empty_table(), events / "sub" / "part-1.parquet")  # nested (hive-style) data counts
    assert inputs.day_inputs(settings, DS)["ready"]


def test_kp_inputs_exits_0_when_ready_and_3_naming_what_is_missing(settings, monkeypatch, capsys):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        assert cli.main(["inputs", "--ds", DS]) == 3
        captured = capsys.readouterr()
        assert json.loads(captured.out.strip().splitlines()[-1])["ready"] is False
        assert "raw/events/ds=2026-10-05" in captured.err and "raw/keyphrases" in captured.err
        _land_all(settings)
        assert cli.main(["inputs", "--ds", DS]) == 0
        assert cli.main(["inputs", "--ds", "2026-13-01"]) == 2
    finally:
        get_settings.cache_clear()


@pytest.fixture
def env_settings(settings, monkeypatch):
    from keyphrase_pipeline.core.settings import get_settings, settings_env

    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_sensor_poke_waits_while_input_is_missing_and_is_done_once_it_lands(env_settings, caplog, capsys):
    from keyphrase_pipeline.orchestration import planning

    with caplog.at_level("WARNING"):
        poke = planning.wait_for_input({}, DS)
    assert poke.is_done is False
    logged = caplog.text + capsys.readouterr().out  # once Airflow configured logging, its structlog prints to stdout
    assert "has not landed yet" in logged and '"scale": "demo"' in logged and "raw/events/ds=2026-10-05" in logged
    _land_all(env_settings)
    poke = planning.wait_for_input({}, DS)
    assert poke.is_done is True and poke.xcom_value["ready"] is True


def test_sensor_in_demo_mode_fails_at_once_for_a_day_outside_the_world(env_settings):
    from airflow.sdk.exceptions import AirflowFailException

    from keyphrase_pipeline.orchestration import planning

    _land(env_settings, "events", "2026-10-01")
    with pytest.raises(AirflowFailException, match=r"cover 2026-10-01 \.\. 2026-10-01"):
        planning.wait_for_input({"scale": "tiny"}, DS)


def test_sensor_args_come_from_dag_settings(monkeypatch):
    import datetime as dt

    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.orchestration import planning

    monkeypatch.setenv("KP_DAG__INPUT_WAIT_HOURS", "3")
    monkeypatch.setenv("KP_DAG__INPUT_POKE_MINUTES", "2.5")
    get_settings.cache_clear()
    try:
        args = planning.input_sensor_args()
    finally:
        get_settings.cache_clear()
    assert args["mode"] == "reschedule" and args["retries"] == 0
    assert args["timeout"] == dt.timedelta(hours=3) and args["poke_interval"] == dt.timedelta(minutes=2.5)
