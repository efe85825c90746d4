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


def test_an_invalid_setting_is_said_once_on_stderr():
    """Settings that fail to load leave logging unconfigured: the error is printed once, not also through
    logging's last-resort handler (a subprocess, since pytest's own log handlers would hide the second copy)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KP_CTR__WINDOW_DAYS": "-3"}
    run = subprocess.run([sys.executable, "-m", "keyphrase_pipeline.cli", "ctr-labels", "--ds", "2026-10-01"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("window_days") == 1, run.stderr


@pytest.mark.parametrize("argv", [["--help"], ["inputs", "--help"], ["promote", "--help"], ["rollback", "--help"],
                                  ["merge-labels", "--help"], ["label-reviews", "--help"], ["cluster", "--help"]])
def test_light_commands_import_no_heavy_library(argv):
    """Heavy libraries stay lazily imported where a light command would load them: `kp --help` and the operator's
    commands answer without torch, Spark, FAISS or ONNX Runtime (imports inside functions exist for this)."""
    import subprocess
    import sys

    code = ("import sys\nfrom keyphrase_pipeline.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'pyspark', 'faiss', 'onnxruntime', 'transformers', 'sentence_transformers') "
            "if m in sys.modules]\nprint('HEAVY', heavy, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stderr, out.stderr[-2000:]


def test_a_renamed_command_still_runs_under_its_former_name(capsys):
    """``kp label`` (before each stage had one name) runs ``kp llm-label`` and says so."""
    from keyphrase_pipeline.cli import RENAMED, main

    assert RENAMED == {"label": "llm-label"}
    assert main(["label", "--help"]) == 0
    out, err = capsys.readouterr()
    assert "'label' is now 'llm-label'" in err and "kp llm-label" in out


def test_every_kp_command_the_docs_name_exists():
    """A command named in backticks (```kp merge-labels```) in the docs, READMEs or docstrings is one ``kp`` has: a
    stage renamed in one place only, or a find-and-replace gone too far, fails here."""
    import re
    import subprocess
    from pathlib import Path

    from keyphrase_pipeline.cli import COMMANDS, RENAMED

    repo = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    named = re.compile(r"`kp ([a-z][a-z-]*[a-z])(?![-*\w])")
    unknown = sorted({(f, m.group(1)) for f in tracked if f.endswith((".md", ".py")) and not f.startswith("bench/results")
                      for m in named.finditer((repo / f).read_text(errors="replace"))
                      if m.group(1) not in COMMANDS and m.group(1) not in RENAMED})
    assert unknown == [], unknown
