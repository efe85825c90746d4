"""Finding vLLM's interpreter: the setting first, then var/venv-vllm, then this one."""

import sys

from keyphrase_pipeline.labels.judges import vllm_runtime as vr


def test_resolve_python_prefers_the_setting_then_the_checkouts_venv(settings, tmp_path, monkeypatch):
    assert vr.resolve_python(settings.with_overrides(**{"judge.vllm.python": "/opt/vllm/bin/python"})) == "/opt/vllm/bin/python"
    monkeypatch.setattr("keyphrase_pipeline.labels.judges.vllm_runtime.CHECKOUT", tmp_path)
    assert vr.resolve_python(settings) == sys.executable  # no var/venv-vllm here
    venv = tmp_path / vr.DEFAULT_VENV / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    assert vr.resolve_python(settings) == str(venv / "python")


def test_has_vllm_is_false_for_a_missing_interpreter_or_one_without_vllm(tmp_path):
    assert not vr.has_vllm(str(tmp_path / "python"))
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert not vr.has_vllm(sys.executable)
