"""The DAG's stages, one module each, and the one table of them (``STAGES``).

Each stage module ``keyphrase_pipeline.stages.<name>`` has ``run(settings, ds, ...) -> dict`` (its run stats,
also written to ``runs/ds=D/<name>.json``), and ``add_arguments(parser)`` / ``main(settings, args)`` for
``kp <command>``. The DAG task, the ``kp`` command, the top-level ``jobs/<name>.py`` entry point and the tests
call the same ``run``. No stage imports another (an import-linter contract in ``pyproject.toml``): what two
stages share lives in ``labels``, ``artifacts``, ``models`` or ``core``.

``STAGES`` is the one list of stages: the ``kp`` commands, the DAG's task ids, timeouts and outlets, the run
stats names and the Keyphrases page's rows derive from it. Importing this package imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUEUE = "default"  # the Celery queue of the CPU workers
GPU_QUEUE = "gpu"  # the Celery queue of the GPU workers
LLM_POOL = "llm"  # the Airflow pool of the judge's shards: one slot per LLM worker


@dataclass(frozen=True)
class Stage:
    """One stage of the daily DAG.

    ``name`` is its one spelling: module ``keyphrase_pipeline.stages.<name>``, entry point ``jobs/<name>.py``,
    DAG task ``<group>.<name>``, run stats ``runs/ds=D/<name>.json``, page row; the command is the same with
    dashes (``kp merge-labels``). ``variants`` (embed: ``items``, ``keyphrases``) make one task and one stats
    file each, named ``<name>_<variant>``. ``reports_to``: a stage whose tasks write no stats of their own (a
    labelling shard writes its ``_DONE`` marker) and whose failures show in that stage's row. ``outlets``:
    the Airflow Assets (datasets, ``orchestration.assets``) its task updates; with ``variants``, one per
    variant, in order. ``queue``: the Celery queue its tasks go to (``gpu`` for the work a GPU speeds up);
    ``pool``: the Airflow pool they take a slot of (the judge's shards: ``llm``). ``timeout_min``: the task's
    execution timeout in minutes (generous for 2 CPU cores; tight enough that a hung task is retried instead
    of blocking the daily run). ``spark_submit``: the DAG submits ``jobs/<name>.py`` with spark-submit.
    """

    name: str
    group: str
    summary: str
    timeout_min: int
    outlets: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    reports_to: str | None = None
    spark_submit: bool = False
    queue: str = DEFAULT_QUEUE
    pool: str | None = None

    @property
    def module(self) -> str:
        """``keyphrase_pipeline.stages.<name>``."""
        return f"{__name__}.{self.name}"

    @property
    def command(self) -> str:
        """The ``kp`` subcommand: ``merge_labels`` -> ``merge-labels``."""
        return self.name.replace("_", "-")

    @property
    def stats_names(self) -> tuple[str, ...]:
        """The run stats files its tasks write (``runs/ds=D/<x>.json``): ``(name,)``, one per variant, or none
        (``reports_to``)."""
        if self.reports_to:
            return ()
        return tuple(f"{self.name}_{v}" for v in self.variants) if self.variants else (self.name,)

    def outlets_of(self, variant: str | None = None) -> tuple[str, ...]:
        """The assets the task of ``variant`` (or of the stage, without variants) updates. ValueError for a
        variant the stage does not have."""
        if not self.variants:
            return self.outlets
        if variant not in self.variants:
            raise ValueError(f"stage {self.name} runs as one of {self.variants}, not {variant!r}")
        return (self.outlets[self.variants.index(variant)],)

    @property
    def task_ids(self) -> tuple[str, ...]:
        """The DAG task ids: ``<group>.<stats name>`` (the task of a ``reports_to`` stage: ``<group>.<name>``)."""
        return tuple(f"{self.group}.{n}" for n in (self.stats_names or (self.name,)))


STAGES: tuple[Stage, ...] = (
    Stage("ctr_labels", "ctr", "Spark: daily aggregate + 30-day CTR labels for a logical date", 90,
          outlets=("ctr_labels",), spark_submit=True),
    Stage("select_pairs", "llm_labels", "Spark: choose the day's pairs for the LLM judge, minus those already labelled",
          60, outlets=("pairs",)),
    Stage("llm_label", "llm_labels", "label one shard (or all shards) of the day's pairs with the configured judge",
          120, reports_to="merge_labels", queue=GPU_QUEUE, pool=LLM_POOL),
    Stage("merge_labels", "llm_labels", "append the day's labelled shards to the label store and report stats", 30,
          outlets=("llm_store",)),
    Stage("train_cross", "train", "fine-tune the cross-encoder assistant on LLM labels", 240,
          outlets=("cross_encoder",), queue=GPU_QUEUE),
    Stage("train_bi", "train", "train the bi-encoder student multi-task (CTR, LLM labels, cross-encoder KD)", 360,
          outlets=("bi_encoder",), queue=GPU_QUEUE),
    Stage("evaluate", "train", "evaluate a student and gate its promotion against the champion", 60,
          outlets=("champion",)),
    Stage("export", "serve", "export the champion's towers to ONNX (verified; optional int8)", 30,
          outlets=("onnx_towers",)),
    Stage("embed", "serve", "Spark + ONNX Runtime: embed items or keyphrases (incremental)", 180,
          outlets=("item_embeddings", "keyphrase_embeddings"), variants=("items", "keyphrases"), queue=GPU_QUEUE),
    Stage("train_ctr", "serve", "train the CTR model (expected clicks) on impressions by position; gate; export", 120,
          outlets=("ctr_model",)),
    Stage("index", "serve", "build the FAISS keyphrase index and measure its recall", 90,
          outlets=("keyphrase_index",)),
    Stage("recommend", "serve", "top-K keyphrases per item from the index", 120, outlets=("recommendations",)),
    Stage("publish", "serve", "publish index, towers and recommendations as a new version (atomic)", 20,
          outlets=("serving",)),
)

#: name -> Stage
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage called ``name``; KeyError naming the known stages otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None


def stats_names() -> list[str]:
    """Every run stats name the stages write, in pipeline order (``embed`` gives ``embed_items``,
    ``embed_keyphrases``)."""
    return [n for s in STAGES for n in s.stats_names]


def group_stats(group: str) -> tuple[str, ...]:
    """The run stats names of the stages of DAG task group ``group`` (``llm_labels``: select_pairs, merge_labels)."""
    return tuple(n for s in STAGES if s.group == group for n in s.stats_names)


def task_ids(queue: str | None = None) -> tuple[str, ...]:
    """Every stage task id of the DAG, in pipeline order; with ``queue``, only the tasks sent to that queue."""
    return tuple(t for s in STAGES if queue is None or s.queue == queue for t in s.task_ids)


def stats_tasks() -> dict[str, str]:
    """Run stats name -> the DAG task id that writes it (the page links a stage's row to its task log)."""
    return {n: f"{s.group}.{n}" for s in STAGES for n in s.stats_names}


def stats_name(name: str, variant: str | None = None) -> str:
    """The stats file a run of stage ``name`` writes, or reports to (``reports_to``): ``embed`` with variant
    ``items`` -> ``embed_items``; ``llm_label`` -> ``merge_labels``."""
    s = stage(name)
    if s.reports_to:
        return s.reports_to
    if s.variants:
        return f"{s.name}_{variant or s.variants[0]}"
    return s.name
