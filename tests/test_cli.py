import importlib

import pytest

from keyphrase_pipeline.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_unknown_command_exit_code_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_module_with_help(name, capsys):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.main)
    assert main([name, "--help"]) == 0
    assert f"kp {name}" in capsys.readouterr().out


def test_config_error_exit_code(monkeypatch, capsys):
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_CTR__WINDOW_DAYS", "-3")
    get_settings.cache_clear()
    try:
        assert main(["ctr-labels", "--ds", "2026-10-01"]) == 2
        assert "window_days" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
