"""The ``kp`` command line: one subcommand per job.

Each subcommand lives in a module that defines ``add_arguments(parser)`` and ``main(settings, args)``;
the module is imported only when its subcommand runs, so ``kp --help`` is instant. Airflow tasks and
tests call the same modules' ``run(settings, ...)`` functions.

Exit codes: 0 success; 1 unexpected failure; 2 bad configuration or arguments; 3 bad or missing input
data (schema, quarantine limit, missing day); 4 a quality gate refused (export tolerance, index
recall floor, model not promoted when promotion was required).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from keyphrase_pipeline.core.errors import ConfigError, KPError, storage_error_from

# subcommand -> (module, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("keyphrase_pipeline.synthetic.synth", "generate the synthetic marketplace (catalog, keyphrases, search logs, hidden truth)"),
    "inputs": ("keyphrase_pipeline.jobs.inputs", "is a day's raw input (events, catalog, keyphrases) in the lake, its files within their contracts?"),
    "ctr-labels": ("keyphrase_pipeline.jobs.ctr_labels", "Spark: daily aggregate + 30-day CTR labels for a logical date"),
    "select-pairs": ("keyphrase_pipeline.jobs.select_pairs", "Spark: choose the day's pairs for the LLM judge, minus those already labelled"),
    "label": ("keyphrase_pipeline.jobs.llm_label", "label one shard (or all shards) of the day's pairs with the configured judge"),
    "merge-labels": ("keyphrase_pipeline.jobs.label_store", "append the day's labelled shards to the label store and report stats"),
    "label-reviews": ("keyphrase_pipeline.jobs.label_reviews", "export human review verdicts on judged pairs as a --labels file"),
    "llm-server": ("keyphrase_pipeline.jobs.judges.vllm_server", "serve a local LLM with vLLM's OpenAI-compatible server (the judge's service)"),
    "train-cross": ("keyphrase_pipeline.jobs.train_cross", "fine-tune the cross-encoder assistant on LLM labels"),
    "train-bi": ("keyphrase_pipeline.jobs.train_bi", "train the bi-encoder student multi-task (CTR, LLM labels, cross-encoder KD)"),
    "evaluate": ("keyphrase_pipeline.jobs.evaluate", "evaluate a student and gate its promotion against the champion"),
    "promote": ("keyphrase_pipeline.jobs.promote", "manually promote (or demote to) a registry version"),
    "score": ("keyphrase_pipeline.jobs.score", "score arbitrary (title, category, keyphrase) pairs with a trained model"),
    "eval-labels": ("keyphrase_pipeline.jobs.eval_labels", "transfer protocol: do models trained on judged pairs beat the zero-shot encoder?"),
    "export": ("keyphrase_pipeline.jobs.export", "export the champion's towers to ONNX (verified; optional int8)"),
    "embed": ("keyphrase_pipeline.jobs.embed", "Spark + ONNX Runtime: embed items or keyphrases (incremental)"),
    "index": ("keyphrase_pipeline.jobs.index", "build the FAISS keyphrase index and measure its recall"),
    "recommend": ("keyphrase_pipeline.jobs.recommend", "top-K keyphrases per item from the index"),
    "publish": ("keyphrase_pipeline.jobs.publish", "publish index, towers and recommendations as a new version (atomic)"),
    "rollback": ("keyphrase_pipeline.jobs.rollback", "make the previous published version current again"),
    "judge-quality": ("keyphrase_pipeline.synthetic.judge_quality", "a synthetic lake's stored labels against its world's truth: AUC, yes-rate, calibration per judge"),
    "report": ("keyphrase_pipeline.synthetic.report", "offline evaluation report (label-mix ablation, precision/recall vs truth)"),
    "cluster": ("keyphrase_pipeline.core.cluster", "the deployed topology natively on localhost: up, down, status (make cluster)"),
    "demo": ("keyphrase_pipeline.synthetic.demo", "run the daily DAG on the demo world for a few days and print a summary"),
}


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
        "Exit codes: 0 ok, 1 failure, 2 bad configuration, 3 bad input data, 4 quality gate refused.",
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

    Errors are logged and printed as ``kp COMMAND: error: MESSAGE`` on stderr. An ImportError of the
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
