"""The settings one DAG run works with: the process settings (``KP_*``) with the run's Params applied
(``PARAM_OVERRIDES``), and demo mode's small training budget and simulated judge (the ``scale`` param)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


# Params of a run (trigger form) -> dotted settings they override for that run only.
PARAM_OVERRIDES = {
    "label_budget": "pairs.daily_budget",
    "rerank_depth": "serve.rerank_depth",
    "scale": "synth.scale",
}


# Demo mode (the ``scale`` param, or ``kp demo``): a small training budget, passed explicitly (about 2 + 3.5
# minutes on 2 CPU cores; the step caps decide; the assistant keeps its best held-out checkpoint, the student its
# last step). A retrain warm-starts from the previous day's models (the champion, CROSS_LATEST) with 60 + 100 steps.
# Without it the defaults train ``train.epochs`` / ``train.bi_epochs`` over the data from the base encoder (the
# assistant with early stopping), which real label sets need. A ``KP_TRAIN__*`` variable in the environment wins over these.
DEMO_TRAIN_BUDGET = {"train.cross_max_steps": 150, "train.bi_max_steps": 250, "train.epochs": 10.0,
                     "train.bi_epochs": 10.0,
                     "train.init_from": "champion", "train.cross_init_from": "latest",
                     "train.warm_cross_max_steps": 60, "train.warm_bi_max_steps": 100,
                     "train.kd_list_ratio": 1.0, "ctr_model.max_steps": 300}


DEMO_TRUTH_PROVIDER = "keyphrase_pipeline.synthetic.world:load_truth"


#: The demo's simulated judge errs the way LLM judges do (lenient on brand, size, model and count mismatches,
#: accessory-for-product confusion, errors correlated within a product type, a confidence that tracks being right:
#: docs/LABELLING.md); ``KP_JUDGE__SIMULATED_ERRORS=iid`` picks the iid annotator instead.
DEMO_JUDGE = {"judge.simulated_errors": "llm"}


#: The demo runs unattended (``dag.test()``, no one at the Required Actions): the gate decides every promotion alone
#: and no pair is put to adjudication. ``make airflow`` and deployed runs ask a person (``review.*``).
DEMO_UNATTENDED = {"review.approval": False, "review.adjudication_pairs": 0}


def env_name(dotted: str) -> str:
    """The environment variable of a dotted setting: ``train.bi_max_steps`` -> ``KP_TRAIN__BI_MAX_STEPS``."""
    section, field = dotted.split(".", 1)
    return f"KP_{section.upper()}__{field.upper()}"


def demo_overrides() -> dict:
    """Demo mode's settings, ``DEMO_TRAIN_BUDGET``, ``DEMO_JUDGE`` and ``DEMO_UNATTENDED``, less the fields the
    environment sets (``env_name``): ``{dotted name: value}``."""

    env = {k.upper() for k in os.environ}  # pydantic-settings reads KP_* names case-insensitively
    return {k: v for k, v in {**DEMO_TRAIN_BUDGET, **DEMO_JUDGE, **DEMO_UNATTENDED}.items() if env_name(k) not in env}


# ---- settings and the day ------------------------------------------------------------------------
def settings_for(params: dict | None = None):
    """The process settings (env ``KP_*``) with the run's Params applied (``PARAM_OVERRIDES``)."""
    from keyphrase_pipeline.core.settings import get_settings

    settings = get_settings()
    overrides = {}
    for param, dotted in PARAM_OVERRIDES.items():
        value = (params or {}).get(param)
        if value not in (None, ""):
            overrides[dotted] = value
    if overrides.get("synth.scale"):  # demo mode: the demo's small training budget and judge, its world's truth
        overrides.update(demo_overrides())
        if not settings.truth_provider:
            overrides["truth_provider"] = DEMO_TRUTH_PROVIDER
    if overrides:
        log.info("run params override settings: %s", overrides)
        settings = settings.with_overrides(**overrides)
    return settings
