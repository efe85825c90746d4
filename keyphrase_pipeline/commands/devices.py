"""``kp devices``: what this worker has and where each stage would run: torch and its CUDA devices, what
``train.device``, ``judge.device`` and ``serve.device`` resolve to (and the trainers' precision), ONNX Runtime's
providers, FAISS's GPUs, and which CPU or GPU wheels are installed. Run it on each worker kind (``kp devices
--check`` exits 2 when a device setting cannot be met or CPU and GPU wheels are mixed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.models.devices import device_report

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings


def add_arguments(parser) -> None:
    """Add ``--check`` to ``parser`` (argparse)."""
    parser.add_argument("--check", action="store_true",
                        help="exit 2 (ConfigError) when a device setting cannot be met here or wheels are mixed")


def main(settings: Settings, args) -> int:
    """Print ``models.devices.device_report`` as indented JSON; with ``--check``, raise ConfigError (exit 2) naming
    the first problem found (a device setting that cannot be met, CPU and GPU wheels installed together)."""
    report = device_report(settings)
    print(json.dumps(report, indent=2))
    if args.check:
        problems = [e["error"] for e in report["settings"].values() if "error" in e]
        problems += [report[k]["error"] for k in ("onnxruntime", "faiss", "wheels") if "error" in report[k]]
        if problems:
            raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more: see the report)" if len(problems) > 1 else ""))
    return 0
