"""Exceptions with meaning: each maps to a `kp` exit code (see keyphrase_pipeline.core.cli)."""


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


# what the OS (errno) or the JVM (Hadoop's and java.io's messages inside a Py4JJavaError) say for each condition
_STORAGE_CONDITIONS = (
    ("disk full", 28, ("No space left on device", "Disk quota exceeded", "ENOSPC")),
    ("read-only file system", 30, ("Read-only file system", "EROFS")),
    ("permission denied", 13, ("Permission denied", "AccessDeniedException")),
)


def storage_error_from(exc: BaseException) -> StorageError | None:
    """A ``StorageError`` naming the condition and the path when ``exc`` (or an exception it was raised from) is a
    full disk, a read-only file system or a denied permission, else None.

    Recognises ``OSError.errno`` (28 ENOSPC, 122 EDQUOT, 30 EROFS, 13 EACCES) with its ``filename``, and the
    messages the JVM puts in a Spark error's text (``java.io.IOException: No space left on device``,
    ``Mkdirs failed to create file:/...``), where the path is the first absolute path or ``file:`` URI found."""
    import re

    seen, chain = set(), []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, StorageError):
            return e
        if isinstance(e, OSError) and e.errno in (28, 122, 30, 13):
            condition = {28: "disk full", 122: "disk full", 30: "read-only file system", 13: "permission denied"}[e.errno]
            path = e.filename or "?"
            return StorageError(f"cannot write the lake at {path}: {condition} ({e.strerror or e}); free space or fix "
                                "the mount and permissions, then clear the task")
    text = "\n".join(str(e) for e in chain)
    for condition, _errno, needles in _STORAGE_CONDITIONS:
        if any(n in text for n in needles):
            m = re.search(r"(file:/[^\s'\",)]+|(?<![\w:])/(?:[\w.=+-]+/)*[\w.=+-]+)", text)
            path = m.group(1) if m else "?"
            first = next((line.strip() for line in text.splitlines() if any(n in line for n in needles)), "")
            return StorageError(f"cannot write the lake at {path}: {condition} ({first[:200]}); free space or fix "
                                "the mount and permissions, then clear the task")
    return None
