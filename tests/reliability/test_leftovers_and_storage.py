"""Issue 27, leftovers and permanent conditions: a killed write's hidden temp directory is removed by the next
write into the same folder once stale; a full disk or a read-only lake is a clear, non-retried error naming the
path and the condition, also when it arrives inside a Spark (JVM) error."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from keyphrase_pipeline.core import lake as lake_mod
from keyphrase_pipeline.core.errors import StorageError, storage_error_from

JVM_DISK_FULL = (
    "An error occurred while calling o123.parquet.\n: org.apache.spark.SparkException: Job aborted.\n"
    "Caused by: java.io.IOException: No space left on device\n"
    "\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)\n"
    "\tat org.apache.hadoop.fs.RawLocalFileSystem$LocalFSFileOutputStream.write(RawLocalFileSystem.java:261)\n"
    "Task failed while writing rows to file:/data/lake/ctr_labels/_tmp-ds=2026-10-05-1a2b3c4d/part-00000.parquet")


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_the_next_write_removes_stale_leftovers_of_killed_writes(tmp_path):
    root = tmp_path / "lake" / "ctr_labels"
    root.mkdir(parents=True)
    stale = root / "_tmp-ds=2026-10-04-deadbeef"  # a task killed mid-write two days ago
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "part-00000.parquet").write_bytes(b"half")
    _age(stale, 2 * 24 * 3600)
    trash = root / "_trash-ds=2026-10-03-cafe0000"
    trash.mkdir()
    _age(trash, 2 * 24 * 3600)
    pointer_tmp = root / ".CURRENT.tmp-0123abcd"
    pointer_tmp.write_text("x")
    _age(pointer_tmp, 2 * 24 * 3600)
    live = root / "_tmp-ds=2026-10-05-0badf00d"  # another writer, right now
    live.mkdir()
    keep = root / "ds=2026-10-02"
    keep.mkdir()
    _age(keep, 5 * 24 * 3600)
    lake_mod.write_parquet_atomic(pd.DataFrame({"a": [1]}), str(root / "ds=2026-10-05"))
    names = sorted(p.name for p in root.iterdir())
    assert names == ["_tmp-ds=2026-10-05-0badf00d", "ds=2026-10-02", "ds=2026-10-05"]


def test_a_single_file_write_sweeps_its_folder_too(tmp_path):
    folder = tmp_path / "staging"
    folder.mkdir()
    old = folder / "_tmp-batch-00001.parquet-12345678"
    old.write_bytes(b"half")
    _age(old, 2 * 24 * 3600)
    lake_mod.write_parquet_file_atomic(pd.DataFrame({"a": [1]}), str(folder / "batch-00001.parquet"))
    assert sorted(p.name for p in folder.iterdir()) == ["batch-00001.parquet"]


LAKE = "/data/lake"


@pytest.mark.parametrize("exc, condition, path", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/lake/registry/students/_tmp-v1"), "disk full",
     "/data/lake/registry/students/_tmp-v1"),
    (OSError(errno.EROFS, "Read-only file system", "/data/lake/serving/CURRENT"), "read-only file system",
     "/data/lake/serving/CURRENT"),
    (RuntimeError(JVM_DISK_FULL), "disk full", "file:/data/lake/ctr_labels/_tmp-ds=2026-10-05-1a2b3c4d/part-00000.parquet"),
], ids=["enospc", "erofs", "jvm-disk-full"])
def test_storage_conditions_are_named_with_their_path(exc, condition, path):
    err = storage_error_from(exc, LAKE)
    assert isinstance(err, StorageError) and err.exit_code == 5
    assert condition in str(err) and path in str(err)
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = exc
    assert storage_error_from(wrapped, LAKE) is not None


def test_a_write_to_a_full_disk_names_no_file_and_a_symlinked_lake_is_the_lake(tmp_path):
    unnamed = OSError(errno.ENOSPC, "No space left on device")  # what f.write and pyarrow raise
    err = storage_error_from(unnamed, str(tmp_path))
    assert isinstance(err, StorageError) and "disk full" in str(err) and str(tmp_path) in str(err)
    real = tmp_path / "real-lake"
    real.mkdir()
    link = tmp_path / "lake"
    link.symlink_to(real)  # settings name the link; the Lake and Spark report resolved paths
    assert storage_error_from(OSError(errno.ENOSPC, "No space left on device", str(real / "x")), str(link)) is not None
    assert storage_error_from(OSError(errno.ENOSPC, "No space left on device", "/dev/shm/t"), str(link)) is None


def _during(handled: BaseException, raised: BaseException) -> BaseException:
    try:
        try:
            raise handled
        except BaseException:
            raise raised  # noqa: B904 - implicit __context__, not a cause
    except BaseException as exc:  # noqa: BLE001
        return exc


@pytest.mark.parametrize("exc", [
    RuntimeError("java.lang.OutOfMemoryError: Java heap space"),
    RuntimeError("judge endpoint https://llm.example.com/v1 answered 403: Permission denied"),  # not the lake
    OSError(errno.ENOSPC, "No space left on device", "/dev/shm/torch_1234"),  # shared memory, outside the lake
    RuntimeError("Caused by: java.io.IOException: No space left on device\n\tat /tmp/spark-local/blockmgr-1/0a"),
    _during(PermissionError(errno.EACCES, "Permission denied", "/data/lake/serving/CURRENT"), TimeoutError("slow")),
], ids=["oom", "http-403", "dev-shm", "spark-local-dir", "only-context"])
def test_errors_that_only_mention_the_words_are_not_storage_errors(exc):
    assert storage_error_from(exc, LAKE) is None


def test_kp_exits_5_and_airflow_does_not_retry(monkeypatch, capsys, tmp_path):
    from keyphrase_pipeline import cli
    from keyphrase_pipeline.core.settings import get_settings
    from keyphrase_pipeline.orchestration import tasks
    from keyphrase_pipeline.stages import publish

    lake = tmp_path / "lake"
    monkeypatch.setenv("KP_LAKE_ROOT", str(lake))
    jvm = JVM_DISK_FULL.replace("/data/lake", str(lake))

    def full(*_a, **_k):
        raise RuntimeError(jvm)  # what a Py4JJavaError's text holds

    monkeypatch.setattr(publish, "run", full)
    get_settings.cache_clear()  # an earlier test's settings (another lake) may be cached: the error names this lake
    try:
        assert cli.main(["publish", "--ds", "2026-10-05"]) == 5
        err = capsys.readouterr().err
        assert "disk full" in err and f"file:{lake}/ctr_labels" in err
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match="StorageError.*disk full.*not retried"):
            tasks.run_stage("publish", {}, "2026-10-05")
    finally:
        get_settings.cache_clear()
