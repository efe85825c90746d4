"""The ``kp`` command line: one subcommand per stage (from the stage table) and per command.

Each subcommand lives in a module that defines ``add_arguments(parser)`` and ``main(settings, args)``;
the module is imported only when its subcommand runs, so ``kp --help`` is instant. Airflow tasks and
tests call the same modules' ``run(settings, ...)`` functions.

Exit codes: 0 success; 1 unexpected failure; 2 bad configuration or arguments; 3 bad or missing input
data (schema, quarantine limit, missing day); 4 a quality gate refused (export tolerance, index
recall floor, model not promoted when promotion was required); 5 the lake cannot be written (disk full, read-only,
permission denied).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from keyphrase_pipeline.core.errors import ConfigError, KPError, storage_error_from
from keyphrase_pipeline.stages import STAGES

# subcommand -> (module, one-line help). The stages' commands come from the stage table, in the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("keyphrase_pipeline.synthetic.synth",
             "generate the synthetic marketplace (catalog, keyphrases, search logs, hidden truth)"),
    "inputs": ("keyphrase_pipeline.commands.inputs",
              "is a day's raw input (events, catalog, keyphrases) in the lake, its files within their contracts?"),
    **{s.command: (s.module, s.summary) for s in STAGES},
    "devices": ("keyphrase_pipeline.commands.devices",
                "this worker's torch/CUDA devices, ONNX Runtime providers, FAISS GPUs, wheels; what each device setting uses"),
    "llm-server": ("keyphrase_pipeline.labels.judges.vllm_server",
                  "serve a local LLM with vLLM's OpenAI-compatible server (the judge's service)"),
    "label-reviews": ("keyphrase_pipeline.commands.label_reviews",
                     "export human review verdicts on judged pairs as a --labels file"),
    "adjudicate": ("keyphrase_pipeline.commands.adjudicate",
                   "a day's pairs where the judge and the cross-encoder disagree most; record a person's answers"),
    "promote": ("keyphrase_pipeline.commands.promote", "manually promote (or demote to) a registry version"),
    "rollback": ("keyphrase_pipeline.commands.rollback", "make the previous published version current again"),
    "score": ("keyphrase_pipeline.commands.score",
             "score arbitrary (title, category, keyphrase) pairs with a trained model"),
    "eval-labels": ("keyphrase_pipeline.commands.eval_labels",
                   "transfer protocol: do models trained on judged pairs beat the zero-shot encoder?"),
    "judge-quality": ("keyphrase_pipeline.synthetic.judge_quality",
                     "a synthetic lake's stored labels against its world's truth: AUC, yes-rate, calibration per judge"),
    "report": ("keyphrase_pipeline.synthetic.report",
              "offline evaluation report (label-mix ablation, precision/recall vs truth)"),
    "cluster": ("keyphrase_pipeline.deploy.cluster",
               "the deployed topology natively on localhost: up, down, status (make cluster)"),
    "demo": ("keyphrase_pipeline.deploy.demo",
            "run the daily DAG on the demo world for a few days and print a summary"),
}

#: former command names -> today's (a stage has one name: ``kp label`` became ``kp llm-label``)
RENAMED = {"label": "llm-label"}


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (a name such as ``DEBUG``; unknown names give INFO) and quiet chatty libraries.

    stdout stays free for a command's JSON result."""
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "httpx", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="kp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="keyphrase-pipeline: advertiser keyphrase recommendations distilled from LLM judgements.",
        epilog=f"commands:\n{lines}\n\nRun 'kp COMMAND --help' for a command's options.\n"
        "Settings come from KP_* environment variables (see docs/OPERATIONS.md).\n"
        "Exit codes: 0 ok, 1 failure, 2 bad configuration, 3 bad input data, 4 quality gate refused, "
        "5 the lake cannot be written.",
    )
    p.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``kp`` with ``argv`` (default ``sys.argv[1:]``); return the process exit code.

    Imports the subcommand's module, parses its options, loads the settings (``get_settings``) and calls
    ``module.main(settings, args)``. Never raises for a pipeline error; it maps outcomes to codes:

    * 0: success, ``--help``, ``--version`` (a command's ``main`` may also return its own code);
    * 2: no command, an unknown command, bad options (argparse), ``ConfigError``;
    * 3: ``DataError`` (``SchemaError`` included); 4: ``GateError``; 5: ``StorageError``, also for any error whose
      cause is a full disk, a read-only file system or a denied permission (``storage_error_from``, e.g. a Spark
      write's JVM trace); 1: ``KPError`` itself (e.g.
      ``JudgeUnavailable``) and any other exception (traceback logged); 130: Ctrl-C.

    Errors are logged and printed as ``kp COMMAND: error: MESSAGE`` on stderr (settings that fail to load, with
    logging not configured yet, are only printed: logging is configured from them). An ImportError of the
    command's module (a missing optional dependency) is raised before this mapping and is not caught.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from keyphrase_pipeline import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name in RENAMED:
        print(f"kp: {name!r} is now {RENAMED[name]!r}; running kp {RENAMED[name]}", file=sys.stderr)
        name = argv[0] = RENAMED[name]
    if name not in COMMANDS:
        top.print_usage(sys.stderr)
        print(f"kp: unknown command {name!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"kp {name}", description=(module.__doc__ or help_).strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad usage
        return int(exc.code or 0)

    from keyphrase_pipeline.core.settings import get_settings

    log = logging.getLogger("kp")
    settings = None
    try:
        settings = get_settings()
        configure_logging(args.log_level or settings.log_level)
        rc = module.main(settings, args)
        return int(rc or 0)
    except KPError as exc:
        if settings is not None or logging.getLogger().handlers:  # else logging's last-resort handler says it twice
            log.error("%s failed: %s", name, exc)
        print(f"kp {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # unexpected: full traceback, exit 1, unless the lake itself cannot be written
        storage = storage_error_from(exc, settings.lake_root) if settings is not None else None
        if storage is not None:
            log.error("%s failed: %s", name, storage)
            print(f"kp {name}: error: {storage}", file=sys.stderr)
            return storage.exit_code
        log.exception("%s failed unexpectedly", name)
        return 1


def require(condition: bool, message: str) -> None:
    """Raise ConfigError (exit 2) unless ``condition``."""
    if not condition:
        raise ConfigError(message)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
