"""Exceptions with meaning: each maps to a `kp` exit code (see keyphrase_pipeline.cli)."""

import os
import re


class KPError(Exception):
    """Base class. Exit code 1."""

    exit_code = 1


class ConfigError(KPError):
    """A setting or command-line value is wrong. Exit code 2."""

    exit_code = 2


class DataError(KPError):
    """Input data is missing, malformed or too bad to use. Exit code 3."""

    exit_code = 3


class SchemaError(DataError):
    """A dataset lacks a column or has it with the wrong type. Exit code 3."""


class GateError(KPError):
    """A quality gate refused (recall floor, export tolerance, promotion). Exit code 4."""

    exit_code = 4


class StorageError(KPError):
    """The lake cannot be written: the disk is full, the file system is read-only, or permission is denied.
    Exit code 5. A retry does not help until an operator frees space or fixes the mount (not retried by Airflow)."""

    exit_code = 5


# the JVM's words for each condition, on the line of a Spark error's text that names the Java exception
_JVM_STORAGE = (
    ("disk full", ("No space left on device", "Disk quota exceeded")),
    ("read-only file system", ("Read-only file system", "ReadOnlyFileSystemException")),
    ("permission denied", ("Permission denied", "AccessDeniedException", "AccessControlException")),
)
_JVM_IO = ("java.io.", "java.nio.", "org.apache.hadoop.", "IOException", "Mkdirs failed")
_ERRNO = {28: "disk full", 122: "disk full", 30: "read-only file system", 13: "permission denied"}


def storage_error_from(exc: BaseException, lake_root: str | None = None) -> StorageError | None:
    """A ``StorageError`` naming the condition and the path when ``exc``, or an exception it was raised from
    (``raise ... from``: ``__cause__`` only), failed to write under ``lake_root`` because the disk is full, the file
    system is read-only or permission is denied; else None.

    Two forms are recognised: an ``OSError`` whose ``errno`` is 28 ENOSPC, 122 EDQUOT, 30 EROFS or 13 EACCES and
    whose ``filename`` lies under ``lake_root`` (symlinks resolved) or is not given (a write to a full disk names
    no file); and a Spark error whose text has a JVM I/O line (``java.io``,
    ``java.nio``, Hadoop, ``IOException``) with one of the JVM's words for the condition, where the path is a
    ``file:`` URI or absolute path under ``lake_root`` on that line or in the text. Without ``lake_root`` any path
    qualifies. An error that merely mentions the words (an HTTP 403 "Permission denied", torch's ``/dev/shm``
    outside the lake) is not one (None): it keeps its own exit code and Airflow's retries."""

    def in_lake(path: str | None) -> bool:
        if not path:
            return False
        if not lake_root:
            return True
        p = os.path.realpath(str(path).removeprefix("file://").removeprefix("file:"))
        root = os.path.realpath(str(lake_root).removeprefix("file://").removeprefix("file:"))
        return p == root or p.startswith(root.rstrip(os.sep) + os.sep)

    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__
    for e in chain:
        if isinstance(e, StorageError):
            return e
        # a write to a full disk names no file (``f.write``, pyarrow): such an OSError counts, one naming a file
        # outside the lake does not
        if isinstance(e, OSError) and e.errno in _ERRNO and (not e.filename or in_lake(e.filename)):
            where = e.filename or (f"{lake_root} (the file was not named)" if lake_root else "? (the file was not named)")
            return StorageError(f"cannot write the lake at {where}: {_ERRNO[e.errno]} ({e.strerror or e}); free "
                                "space or fix the mount and permissions, then clear the task")
    paths = re.compile(r"(file:/[^\s'\",)]+|(?<![\w:/])/(?:[\w.=+-]+/)*[\w.=+-]+)")
    for e in chain:
        if isinstance(e, OSError):
            continue
        text = str(e)
        everywhere = [p for p in paths.findall(text) if in_lake(p)]
        for line in text.splitlines():
            if not any(j in line for j in _JVM_IO):
                continue
            for condition, words in _JVM_STORAGE:
                if any(w in line for w in words):
                    here = [p for p in paths.findall(line) if in_lake(p)]
                    path = (here or everywhere or [None])[0]
                    if path is None:
                        continue
                    return StorageError(f"cannot write the lake at {path}: {condition} ({line.strip()[:200]}); free "
                                        "space or fix the mount and permissions, then clear the task")
    return None
