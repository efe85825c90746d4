"""Device logic without a GPU: the device layer (torch's CUDA state, ONNX Runtime's providers, the faiss module, the
installed distributions) is faked at its boundary in ``keyphrase_pipeline.models.devices``, so a change that would
send a GPU worker to the CPU, or let a CPU worker believe it has a GPU, fails here."""

from __future__ import annotations

import re
import types

import pytest

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.models import devices

NO_GPU = {"torch": "2.13.0+cpu", "cuda_build": None, "available": False, "devices": 0, "names": []}
ONE_GPU = {"torch": "2.13.0+cu128", "cuda_build": "12.8", "available": True, "devices": 1, "names": ["NVIDIA H200"]}


@pytest.fixture
def torch_sees(monkeypatch):
    def set_state(state):
        monkeypatch.setattr(devices, "torch_cuda", lambda: dict(state))

    return set_state


@pytest.mark.parametrize("value,state,want", [("auto", NO_GPU, "cpu"), ("auto", ONE_GPU, "cuda"), ("cpu", ONE_GPU, "cpu"),
                                              ("cuda", ONE_GPU, "cuda"), ("cuda:0", ONE_GPU, "cuda:0")])
def test_resolve_device_picks_what_is_there(torch_sees, value, state, want):
    torch_sees(state)
    assert devices.resolve_device(value, "train.device") == want


def test_auto_logs_what_it_chose(torch_sees, caplog):
    torch_sees(NO_GPU)
    with caplog.at_level("INFO", logger=devices.__name__):
        devices.resolve_device("auto", "judge.device")
    assert "judge.device=auto: cpu" in caplog.text and "CPU-only build" in caplog.text


@pytest.mark.parametrize("value,state", [("cuda", NO_GPU), ("cuda:1", ONE_GPU),
                                         ("cuda", {**NO_GPU, "cuda_build": "12.8", "torch": "2.13.0+cu128"})])
def test_cuda_without_a_usable_device_is_a_config_error_naming_the_setting(torch_sees, value, state):
    torch_sees(state)
    with pytest.raises(ConfigError) as err:
        devices.resolve_device(value, "train.device")
    msg = str(err.value)
    assert f"train.device={value!r}" in msg and "sees" in msg and "set train.device=auto or cpu" in msg
    assert err.value.exit_code == 2


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "", "tpu", "cpu\n", "cuda:-1"])
def test_a_value_that_is_not_a_device_is_refused(value):
    with pytest.raises(ConfigError, match="is not a device"):
        devices.resolve_device(value, "serve.device")
    # and when the settings load, naming the setting and echoing the value
    from keyphrase_pipeline.core.settings import load_settings

    for section in ("train", "judge", "serve"):
        with pytest.raises(ConfigError, match=rf"{section}.device.*{re.escape(repr(value))} is not a device"):
            load_settings(**{section: {"device": value}})


def test_precision_follows_the_device(monkeypatch):
    import torch

    assert devices.trainer_precision("cpu") == {"use_cpu": True} and devices.precision_name("cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.trainer_precision("cuda") == {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.trainer_precision("cuda:0") == {"fp16": True}


@pytest.mark.parametrize("available,value,want", [
    (["CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
])
def test_onnx_providers(monkeypatch, available, value, want):
    monkeypatch.setattr(devices, "ort_providers", lambda: list(available))
    assert devices.provider_names(devices.onnx_providers(value)) == want


def test_cuda_n_reaches_onnx_runtime_as_its_device_id(monkeypatch):
    monkeypatch.setattr(devices, "ort_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert devices.onnx_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert devices.onnx_providers("cuda")[0] == ("CUDAExecutionProvider", {"device_id": 0})


@pytest.mark.parametrize("session,value,fails", [
    (["CPUExecutionProvider"], "cuda", True), (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:0", False),
    (["CPUExecutionProvider"], "auto", False), (["CPUExecutionProvider"], "cpu", False)])
def test_a_session_that_did_not_get_cuda_fails_when_cuda_was_asked_for(session, value, fails):
    """onnxruntime-gpu lists the CUDA provider even when its libraries fail to load, then builds a CPU session."""
    if fails:
        with pytest.raises(ConfigError, match="did not load"):
            devices.check_session_providers(session, value)
    else:
        devices.check_session_providers(session, value)


def test_the_trainers_refuse_a_cuda_index_they_would_not_honour():
    assert devices.require_one_training_device("cuda") == "cuda"
    assert devices.require_one_training_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES=1"):
        devices.require_one_training_device("cuda:1")


def test_onnx_cuda_without_the_cuda_provider_fails_instead_of_running_on_the_cpu(monkeypatch):
    monkeypatch.setattr(devices, "ort_providers", lambda: ["AzureExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(devices, "installed_distributions", lambda name: ["onnxruntime==1.23.2"])
    with pytest.raises(ConfigError) as err:
        devices.onnx_providers("cuda", "serve.device")
    assert "serve.device='cuda'" in str(err.value) and "onnxruntime==1.23.2" in str(err.value)
    assert "onnxruntime-gpu" in str(err.value)


def fake_faiss(gpus: int, gpu_build: bool = True, cannot_move: bool = False):
    moved = []

    def index_cpu_to_gpu(res, device, index):
        if cannot_move:
            raise RuntimeError("HNSW has no GPU version")
        moved.append(device)
        return ("gpu", device, index)

    mod = types.SimpleNamespace(get_num_gpus=lambda: gpus, index_cpu_to_gpu=index_cpu_to_gpu, moved=moved,
                                cannot_move=cannot_move)
    if gpu_build:
        mod.StandardGpuResources = lambda: "resources"
    return mod


@pytest.mark.parametrize("value,faiss_mod,want", [
    ("cuda:1", fake_faiss(1), None),
    ("auto", fake_faiss(1), ("gpu", 0, "ix")), ("cuda", fake_faiss(1), ("gpu", 0, "ix")),
    ("cuda:1", fake_faiss(2), ("gpu", 1, "ix")), ("cpu", fake_faiss(1), "ix"),
    ("auto", fake_faiss(0), "ix"), ("auto", fake_faiss(0, gpu_build=False), "ix"),
    ("auto", fake_faiss(1, cannot_move=True), "ix"),
])
def test_faiss_on_device(value, faiss_mod, want):
    if want is None:  # a GPU index FAISS does not have
        with pytest.raises(ConfigError, match="cannot use GPU 1"):
            devices.faiss_on_device("ix", value, faiss_module=faiss_mod)
        with pytest.raises(ConfigError, match="cannot use GPU 1"):
            devices.require_faiss_device(value, faiss_module=faiss_mod)
        return
    assert devices.faiss_on_device("ix", value, faiss_module=faiss_mod) == want
    if not faiss_mod.cannot_move:  # the index type decides the rest (faiss_on_device keeps HNSW on the CPU)
        assert devices.require_faiss_device(value, faiss_module=faiss_mod) == (want != "ix")


@pytest.mark.parametrize("faiss_mod,found", [(fake_faiss(0, gpu_build=False), "CPU-only build"),
                                             (fake_faiss(0), "seeing 0 GPU"),
                                             (fake_faiss(1, cannot_move=True), "cannot go to the GPU")])
def test_faiss_cuda_that_cannot_be_met_fails(monkeypatch, faiss_mod, found):
    monkeypatch.setattr(devices, "installed_distributions", lambda name: ["faiss-cpu==1.13.0"])
    with pytest.raises(ConfigError, match=found):
        devices.faiss_on_device("ix", "cuda", "serve.device", faiss_module=faiss_mod)
    if found != "cannot go to the GPU":
        with pytest.raises(ConfigError, match=found):
            devices.require_faiss_device("cuda", "serve.device", faiss_module=faiss_mod)


def test_require_faiss_device_says_where_the_search_runs():
    assert devices.require_faiss_device("auto", faiss_module=fake_faiss(1)) is True
    assert devices.require_faiss_device("auto", faiss_module=fake_faiss(0, gpu_build=False)) is False
    assert devices.require_faiss_device("cpu", faiss_module=fake_faiss(1)) is False


def test_a_top_k_faiss_cannot_give_on_the_gpu_is_refused_before_any_work():
    k = devices.FAISS_GPU_MAX_K
    assert devices.require_faiss_device("cuda", faiss_module=fake_faiss(1), k=k) is True
    with pytest.raises(ConfigError, match=f"serve.top_k asks FAISS for {k + 1} neighbours.*at most {k}"):
        devices.require_faiss_device("cuda", faiss_module=fake_faiss(1), k=k + 1)
    # auto searches on the CPU instead, and the index is not moved (what the run stats record as faiss_gpu)
    assert devices.require_faiss_device("auto", faiss_module=fake_faiss(1), k=k + 1) is False
    assert devices.faiss_on_device("ix", "auto", faiss_module=fake_faiss(1), k=k + 1) == "ix"
    assert devices.faiss_on_device("ix", "auto", faiss_module=fake_faiss(1), k=k) == ("gpu", 0, "ix")
    # on the CPU any k goes
    assert devices.require_faiss_device("auto", faiss_module=fake_faiss(0), k=k + 1) is False
    assert devices.require_faiss_device("cpu", faiss_module=fake_faiss(1), k=k + 1) is False


@pytest.mark.parametrize("installed,onnx,faiss_kind,mixed", [
    (["onnxruntime==1.23.2", "faiss-cpu==1.13.0"], "cpu", "cpu", False),
    (["onnxruntime-gpu==1.23.2", "faiss-gpu-cu12==1.13.0"], "gpu", "gpu", False),
    (["onnxruntime==1.23.2", "onnxruntime-gpu==1.23.2", "faiss-cpu==1.13.0"], "both", "cpu", True),
    (["onnxruntime==1.23.2", "faiss-cpu==1.13.0", "faiss-gpu==1.7.2"], "cpu", "both", True),
    (["faiss-cpu==1.13.0"], "none", "cpu", True),
    # builds WHEELS does not name are found by their import name
    (["onnxruntime==1.23.2", "faiss-cpu==1.15.1", "faiss-gpu-cu12-cuvs==1.15.0"], "cpu", "both", True),
    (["onnxruntime-gpu==1.23.2", "faiss-cuda==1.15.0"], "gpu", "gpu", False),
])
def test_the_wheel_set_is_one_kind_or_refused(monkeypatch, installed, onnx, faiss_kind, mixed):
    def dists(name):  # what packages_distributions() maps the import name to
        return [d for d in installed if d.split("==")[0].startswith(name)]

    monkeypatch.setattr(devices, "installed_distributions", dists)
    ws = devices.wheel_set()
    assert (ws["onnxruntime"], ws["faiss"]) == (onnx, faiss_kind)
    if mixed:
        with pytest.raises(ConfigError, match="both CPU and GPU wheels" if "both" in (onnx, faiss_kind) else "no build"):
            devices.check_wheel_set()
    else:
        assert devices.check_wheel_set() == ws


def test_this_machine_has_the_cpu_wheel_set():
    """What `make install` puts here: the CPU wheels only (pip check in the Makefile, this test for the kind)."""
    ws = devices.check_wheel_set()
    assert ws["onnxruntime"] == "cpu" and ws["faiss"] == "cpu", ws


def test_kp_devices_check_exits_2_when_cuda_is_asked_for_here(monkeypatch, capsys):
    from keyphrase_pipeline.cli import main
    from keyphrase_pipeline.core.settings import get_settings

    monkeypatch.setenv("KP_TRAIN__DEVICE", "cuda")
    monkeypatch.setattr(devices, "torch_cuda", lambda: dict(NO_GPU))
    get_settings.cache_clear()
    try:
        assert main(["devices", "--check"]) == 2
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert '"train.device"' in out and "train.device='cuda' but there is no usable CUDA device" in err


def test_the_report_carries_every_problem_it_finds(monkeypatch):
    """``kp devices`` on a worker that cannot meet ``cuda``: each probe's error is in the report (and --check's list)."""
    from keyphrase_pipeline.core.settings import load_settings

    monkeypatch.setattr(devices, "torch_cuda", lambda: dict(NO_GPU))
    monkeypatch.setattr(devices, "ort_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(devices, "faiss_gpus", lambda faiss_module=None: 0)
    monkeypatch.setattr(devices, "installed_distributions",
                        lambda name: {"onnxruntime": ["onnxruntime==1", "onnxruntime-gpu==1"]}.get(name, ["faiss-cpu==1"]))
    s = load_settings(train={"device": "cuda"}, serve={"device": "cuda"})
    report = devices.device_report(s)
    assert "no usable CUDA device" in report["settings"]["train.device"]["error"]
    assert "judge.device" in report["settings"] and "error" not in report["settings"]["judge.device"]
    assert "CUDAExecutionProvider" in report["onnxruntime"]["error"]
    assert "FAISS cannot use GPU 0" in report["faiss"]["error"]
    assert "both CPU and GPU wheels" in report["wheels"]["error"]
    # serve.device is judged by what serving runs (ONNX Runtime, FAISS), not by torch; judge.device only where the
    # judge runs torch in process (the transformers backend)
    assert "error" not in report["settings"]["serve.device"] and "onnxruntime" in report["settings"]["serve.device"]["applies"]
    judged = devices.device_report(load_settings(judge={"device": "cuda", "backend": "simulated"}))
    assert "applies" in judged["settings"]["judge.device"] and "error" not in judged["settings"]["judge.device"]
    local = devices.device_report(load_settings(judge={"device": "cuda", "backend": "transformers"}))
    assert "no usable CUDA device" in local["settings"]["judge.device"]["error"]
