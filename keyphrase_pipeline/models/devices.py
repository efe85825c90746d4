"""Where the compute runs: the torch device, ONNX Runtime's execution providers, FAISS on the GPU, and which
CPU or GPU wheels are installed.

A device setting (``train.device``, ``judge.device``, ``serve.device``) is ``auto``, ``cpu``, ``cuda`` or
``cuda:N``. ``cuda`` on a worker without a usable CUDA device, ONNX Runtime CUDA provider or FAISS GPU build fails
loudly: a ConfigError (exit 2) naming the setting and what was found, never a silent fall back to the CPU.
``auto`` picks CUDA when it is there and logs what it chose. ``device_report`` says what a worker has and what
each setting resolves to (``kp devices``).

The device layer (``torch.cuda``, ``onnxruntime.get_available_providers``, the ``faiss`` module, the installed
distributions) is read through the small functions ``torch_cuda``, ``ort_providers``, ``faiss_gpus`` and
``installed_distributions``, so tests fake it at that boundary.
"""

from __future__ import annotations

import functools
import logging
import re

from keyphrase_pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

#: import name -> (CPU distribution, GPU distributions): both kinds installed share the import name, and whichever
#: was installed last wins, so a GPU worker could run on the CPU unnoticed
WHEELS = {
    "onnxruntime": (("onnxruntime",), ("onnxruntime-gpu",)),
    "faiss": (("faiss-cpu",), ("faiss-gpu", "faiss-gpu-cu11", "faiss-gpu-cu12")),
}


def check_setting(value: str, setting: str) -> str:
    """``value`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ConfigError (exit 2) naming ``setting``
    otherwise."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{setting}={value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def torch_cuda() -> dict:
    """What torch sees: ``{"torch": version, "cuda_build": CUDA version torch was built with (None: a CPU-only
    wheel), "available": bool, "devices": int, "names": [str]}``."""
    import torch

    available = bool(torch.cuda.is_available())
    count = int(torch.cuda.device_count()) if available else 0
    return {"torch": torch.__version__, "cuda_build": torch.version.cuda, "available": available, "devices": count,
            "names": [torch.cuda.get_device_name(i) for i in range(count)]}


def _found(state: dict) -> str:
    build = f"CUDA {state['cuda_build']} build" if state.get("cuda_build") else "a CPU-only build"
    return f"torch {state.get('torch')} ({build}) sees {state.get('devices', 0)} CUDA device(s)"


def resolve_device(value: str = "auto", setting: str = "train.device") -> str:
    """The torch device for a device setting: ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is ``cuda`` when torch sees a CUDA device, else ``cpu`` (the choice is logged). ``cuda``/``cuda:N``
    must name a device torch can use. Raises ConfigError (exit 2) naming ``setting`` and what torch found when it
    cannot, or when ``value`` is not a device."""
    check_setting(value, setting)
    if value == "cpu":
        return "cpu"
    state = torch_cuda()
    if value == "auto":
        chosen = "cuda" if state["available"] else "cpu"
        log.info("%s=auto: %s (%s)", setting, chosen, _found(state))
        return chosen
    index = cuda_index(value)
    if not state["available"] or index >= state["devices"]:
        raise ConfigError(f"{setting}={value!r} but there is no usable CUDA device {index}: {_found(state)}. "
                          f"Run this stage on a GPU worker (queue gpu), or set {setting}=auto or cpu")
    return value


def cuda_index(device: str) -> int:
    """N of ``cuda:N`` (0 for ``cuda``, and for ``auto``: the first GPU)."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def require_one_training_device(device: str, setting: str = "train.device") -> str:
    """``device`` when the trainers can honour it. transformers' Trainer always trains on ``cuda:0`` (and data-parallel
    over every visible GPU), so ``cuda:N`` with N > 0 would train elsewhere than it says: ConfigError (exit 2)
    telling to make the GPU the only visible one (``CUDA_VISIBLE_DEVICES=N``) and set ``cuda``."""
    if device.startswith("cuda") and cuda_index(device) > 0:
        raise ConfigError(f"{setting}={device!r}: the trainers train on cuda:0; give this worker that GPU alone "
                          f"(CUDA_VISIBLE_DEVICES={cuda_index(device)}) and set {setting}=cuda")
    return device


def trainer_precision(device: str) -> dict:
    """The trainers' precision arguments for a resolved device: bf16 on GPUs that support it, else fp16 on a GPU,
    fp32 on the CPU (``use_cpu``)."""
    if device.startswith("cuda"):
        import torch

        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {"use_cpu": True}


def precision_name(device: str) -> str:
    """The trainers' precision on a resolved device, as a reader says it: ``bf16``, ``fp16`` or ``fp32``."""
    name = next(iter(trainer_precision(device)))
    return "fp32" if name == "use_cpu" else name


def ort_providers() -> list[str]:
    """ONNX Runtime's available execution providers on this worker."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def onnx_providers(value: str = "auto", setting: str = "serve.device") -> list:
    """ONNX Runtime execution providers for a device setting, as ``InferenceSession(providers=...)`` takes them:
    ``[("CUDAExecutionProvider", {"device_id": N}), "CPUExecutionProvider"]`` for ``cuda``/``cuda:N`` (and for
    ``auto`` when the CUDA provider is installed), else ``["CPUExecutionProvider"]`` (``provider_names`` gives the
    names). Whether the CUDA provider really loaded is checked on the session (``check_session_providers``).

    Raises ConfigError (exit 2) for ``cuda`` without the CUDA provider (the ``onnxruntime`` wheel is CPU-only;
    ``onnxruntime-gpu`` has it), naming ``setting``, the providers found and the installed distributions."""
    check_setting(value, setting)
    if value == "cpu":
        return ["CPUExecutionProvider"]
    available = ort_providers()
    if "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": cuda_index(value)}),
                "CPUExecutionProvider"]
    if value == "auto":
        log.info("%s=auto: ONNX Runtime on the CPU (providers %s)", setting, available)
        return ["CPUExecutionProvider"]
    raise ConfigError(f"{setting}={value!r} but ONNX Runtime has no CUDAExecutionProvider here (providers "
                      f"{available}; installed: {', '.join(installed_distributions('onnxruntime')) or 'none'}). "
                      f"Install onnxruntime-gpu instead of onnxruntime on GPU workers, or set {setting}=auto or cpu")


def provider_names(providers: list) -> list[str]:
    """The names of ``onnx_providers``' entries (a name, or a (name, options) pair)."""
    return [p[0] if isinstance(p, tuple) else p for p in providers]


def check_session_providers(session_providers: list[str], value: str, setting: str = "serve.device") -> None:
    """After an ONNX Runtime session is made: ConfigError (exit 2) when ``value`` asked for CUDA and the session did
    not get the CUDA provider (``onnxruntime-gpu`` lists it even when its CUDA or cuDNN libraries fail to load, and
    then builds a CPU session with a warning); for ``auto`` the outcome is logged."""
    on_cuda = bool(session_providers) and session_providers[0] == "CUDAExecutionProvider"
    if value.startswith("cuda") and not on_cuda:
        raise ConfigError(f"{setting}={value!r} but ONNX Runtime built a session on {session_providers}: the CUDA "
                          "provider is installed but did not load (CUDA/cuDNN libraries missing or of another "
                          f"version; its log says which). Fix the GPU image, or set {setting}=auto or cpu")
    if value == "auto":
        log.info("%s=auto: ONNX Runtime session on %s", setting, session_providers)


def faiss_gpus(faiss_module=None) -> int:
    """GPUs FAISS can use: 0 for a CPU-only build (no ``StandardGpuResources``) or no visible GPU."""
    if faiss_module is None:
        import faiss as faiss_module
    if not hasattr(faiss_module, "StandardGpuResources"):
        return 0
    return int(faiss_module.get_num_gpus())


def faiss_on_device(index, value: str = "auto", setting: str = "serve.device", faiss_module=None,
                    k: int | None = None, k_from: str = "serve.top_k"):
    """``index`` on the GPU for ``cuda``/``cuda:N`` (and for ``auto`` when FAISS has a GPU), else ``index`` itself
    (so ``faiss_on_device(ix, ...) is not ix`` says where the search runs: the run stats' ``faiss_gpu``).

    ``auto`` keeps an index type without a GPU version (HNSW), or a search of more than ``FAISS_GPU_MAX_K``
    neighbours (``k``), on the CPU, logged. Raises ConfigError (exit 2) for ``cuda`` when FAISS has no GPU (a
    CPU-only build, or no visible GPU: ``require_faiss_device``), ``k`` is too large for it, or the index type
    cannot go to the GPU, naming ``setting`` and what was found (``k_from``: the setting ``k`` comes from)."""
    if value != "cpu" and faiss_module is None:
        import faiss as faiss_module
    if not require_faiss_device(value, setting, faiss_module, k=k, k_from=k_from):
        return index
    try:
        return faiss_module.index_cpu_to_gpu(faiss_module.StandardGpuResources(), cuda_index(value), index)
    except Exception as exc:  # e.g. HNSW has no GPU version
        if value == "auto":
            log.info("%s=auto: the index stays on the CPU (%s)", setting, exc)
            return index
        raise ConfigError(f"{setting}={value!r} but this index cannot go to the GPU ({type(exc).__name__}: {exc}); "
                          f"choose a serve.ann_factory with a GPU version (Flat, IVF) or set {setting}=auto") from exc


# FAISS's GPU k-selection handles k up to this many neighbours (GPU_MAX_SELECTION_K in faiss/gpu/utils/DeviceDefs.cuh
# of the CUDA builds); a larger k fails inside the search, after the index was moved.
FAISS_GPU_MAX_K = 2048


def require_faiss_device(value: str = "auto", setting: str = "serve.device", faiss_module=None,
                         k: int | None = None, k_from: str = "serve.top_k") -> bool:
    """Whether FAISS searches on the GPU for ``value``, decided before any work (``faiss_on_device`` moves the index
    by the same rule): True for ``cuda``/``cuda:N`` when FAISS sees that GPU, and for ``auto`` when it sees one;
    False for ``cpu``, and for ``auto`` without. Raises ConfigError (exit 2) for ``cuda``/``cuda:N`` when FAISS has no
    such GPU here (a CPU-only build, or too few visible GPUs), naming ``setting`` and what was found, and when a
    ``cuda`` search would run with ``k`` neighbours per query (set by the setting ``k_from``, ``serve.top_k`` by
    default) above ``FAISS_GPU_MAX_K`` (``auto`` searches on the CPU then, logged)."""
    check_setting(value, setting)
    if value == "cpu":
        return False
    if faiss_module is None:
        import faiss as faiss_module
    gpus = faiss_gpus(faiss_module)
    index_no = cuda_index(value)
    if index_no < gpus:
        if k is not None and k > FAISS_GPU_MAX_K and value == "auto":
            log.warning("%s=auto: %d neighbours per query (%s) is more than FAISS returns on the GPU (%d): searching "
                        "on the CPU", setting, k, k_from, FAISS_GPU_MAX_K)
            return False
        if k is not None and k > FAISS_GPU_MAX_K:
            raise ConfigError(f"{k_from} asks FAISS for {k} neighbours per query but on the GPU ({setting}={value!r}) "
                              f"it returns at most {FAISS_GPU_MAX_K}: lower {k_from} or set {setting}=cpu")
        return True
    if value == "auto":
        return False
    build = "a GPU build" if hasattr(faiss_module, "StandardGpuResources") else "a CPU-only build"
    raise ConfigError(f"{setting}={value!r} but FAISS cannot use GPU {index_no}: {build} seeing {gpus} GPU(s) "
                      f"(installed: {', '.join(installed_distributions('faiss')) or 'none'}). Install faiss-gpu "
                      f"instead of faiss-cpu on GPU workers, or set {setting}=auto or cpu")


@functools.cache
def _distributions_by_import() -> dict:
    """``importlib.metadata.packages_distributions()``, read once per process (a scan of every installed
    distribution: about a tenth of a second; the wheel check and its messages ask several times)."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def installed_distributions(import_name: str) -> list[str]:
    """The installed distributions that provide the import name ``import_name`` (``importlib.metadata``'s
    ``packages_distributions``, so a build not named in ``WHEELS`` is found too), as ``name==version``."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in sorted(set(_distributions_by_import().get(import_name, ()))):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover - listed but gone
            pass
    return out


def wheel_set() -> dict:
    """Which build of each shared import name is installed: ``{"onnxruntime": "cpu"|"gpu"|"both"|"none",
    "faiss": ..., "distributions": {import name: [dist==version]}}``. Two or more distributions providing one
    import name are "both" whatever their names (they write the same files); one not named in ``WHEELS`` counts as
    the GPU kind when its name says gpu or cuda, else as the CPU kind."""
    out: dict = {"distributions": {}}
    for name, (_cpu, gpu) in WHEELS.items():
        found = installed_distributions(name)
        names = [f.split("==")[0].lower() for f in found]
        if len(names) > 1:
            out[name] = "both"
        elif not names:
            out[name] = "none"
        else:
            n = names[0]
            out[name] = "gpu" if n in gpu or "gpu" in n or "cuda" in n else "cpu"
        out["distributions"][name] = found
    return out


def check_wheel_set() -> dict:
    """``wheel_set()`` when each import name has exactly one of its CPU and GPU distributions installed; ConfigError
    (exit 2) naming them and the fix otherwise: both (they write the same files: whichever came last decides,
    unnoticed) or neither (``pip install keyphrase-pipeline[cpu]``, or ``[gpu]`` on GPU workers)."""
    ws = wheel_set()
    missing = [name for name in WHEELS if ws[name] == "none"]
    if missing:
        raise ConfigError(f"no build of {', '.join(missing)} is installed: install the project with one wheel set, "
                          "pip install -e '.[cpu]' (make install) or -e '.[gpu]' on GPU workers")
    mixed = [name for name in WHEELS if ws[name] == "both"]
    if mixed:
        listed = "; ".join(f"{name}: {', '.join(ws['distributions'][name])}" for name in mixed)
        raise ConfigError(f"both CPU and GPU wheels are installed for {', '.join(mixed)} ({listed}): they share one "
                          "import name and the last one installed wins. Keep one set per worker kind: "
                          "uninstall both, then pip install -e '.[cpu]' or, on GPU workers, -e '.[gpu]' (docs/OPERATIONS.md)")
    return ws


def device_report(settings) -> dict:
    """What this worker has and what each device setting resolves to, without raising: ``{"torch": torch_cuda(),
    "settings": {setting: {"value", "device" or "error", "precision"}}, "onnxruntime": {"providers", "chosen" or
    "error"}, "faiss": {"gpus"}, "wheels": wheel_set() (+ "error" when mixed)}``."""
    report: dict = {"torch": torch_cuda(), "settings": {}}
    # torch runs the trainers and the in-process transformers judge; serving runs ONNX Runtime and FAISS, judged below
    for setting, value, applies in (("train.device", settings.train.device, True),
                                    ("judge.device", settings.judge.device, settings.judge.backend == "transformers")):
        entry: dict = {"value": value}
        if not applies:
            entry["applies"] = (f"not to judge.backend={settings.judge.backend!r}: it runs the model elsewhere or "
                                "not at all (vllm checks its own platform when it loads)")
            report["settings"][setting] = entry
            continue
        try:
            entry["device"] = resolve_device(value, setting)
            entry["precision"] = precision_name(entry["device"])
        except ConfigError as exc:
            entry["error"] = str(exc)
        report["settings"][setting] = entry
    report["settings"]["serve.device"] = {"value": settings.serve.device,
                                          "applies": "through ONNX Runtime (embed) and FAISS (index, recommend): "
                                                     "see onnxruntime.chosen and faiss.on_gpu"}
    ort_entry: dict = {}
    try:
        ort_entry["providers"] = ort_providers()
        ort_entry["chosen"] = provider_names(onnx_providers(settings.serve.device, "serve.device"))
    except ConfigError as exc:
        ort_entry["error"] = str(exc)
    except ImportError as exc:
        ort_entry["error"] = f"onnxruntime is not installed ({exc}): pip install -e '.[cpu]' or '.[gpu]'"
    report["onnxruntime"] = ort_entry
    faiss_entry: dict = {}
    try:
        faiss_entry["gpus"] = faiss_gpus()
        faiss_entry["on_gpu"] = require_faiss_device(settings.serve.device, "serve.device")
    except ConfigError as exc:
        faiss_entry["error"] = str(exc)
    except ImportError as exc:
        faiss_entry["error"] = f"faiss is not installed ({exc}): pip install -e '.[cpu]' or '.[gpu]'"
    report["faiss"] = faiss_entry
    report["wheels"] = wheel_set()
    try:
        check_wheel_set()
    except ConfigError as exc:
        report["wheels"]["error"] = str(exc)
    return report
