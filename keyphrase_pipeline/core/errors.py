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
