"""Optional ground truth for evaluation and the web UI: a provider plugged in by configuration.

Production data has no ground truth: ``load_truth`` returns None and the evaluator reports metrics
against the LLM labels only. A synthetic marketplace knows every pair's true relevance; the package
``synthetic`` plugs its world in by name (``settings.truth_provider``, env ``KP_TRUTH_PROVIDER``,
e.g. ``keyphrase_pipeline.synthetic.world:load_truth``, set by ``kp demo``, the DAG's demo mode, the Makefile and the
tests), so no production module imports the demo code (tests/test_import_graph.py checks it).

A provider is ``module:function``; ``function(settings)`` returns a ``TruthProvider`` or None (no
truth for this lake, e.g. no synthetic world in it).
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Protocol

from keyphrase_pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


class TruthProvider(Protocol):
    """What a ground-truth provider offers (``keyphrase_pipeline.synthetic.world.World`` is one).

    Ids are int64 item and keyphrase ids of the lake; unknown ids count as not relevant."""

    def is_relevant(self, item_ids, keyphrase_ids):
        """Bool ``np.ndarray`` of shape ``(n,)``: is keyphrase ``keyphrase_ids[i]`` truly relevant to item ``item_ids[i]``."""

    def relevant_keyphrases(self, item_ids) -> dict:
        """item_id -> int64 ``np.ndarray`` of its truly relevant keyphrase ids."""

    def exposure(self, settings: Settings, end_ds: str, days: int):
        """pandas DataFrame (item_id int64, impressions, bucket ``tail``|``mid``|``head``) over ``days`` ending ``end_ds``."""


def load_truth(settings: Settings) -> TruthProvider | None:
    """The configured provider's truth for this lake, or None (none configured, or none in the lake).

    Raises ConfigError when ``settings.truth_provider`` does not name an importable ``module:function``."""
    spec = (getattr(settings, "truth_provider", "") or "").strip()
    if not spec:
        log.info("no truth provider configured (settings.truth_provider, env KP_TRUTH_PROVIDER): "
                 "truth metrics are skipped")
        return None
    module, sep, attr = spec.partition(":")
    if not (sep and module and attr):
        raise ConfigError(f"truth_provider {spec!r}: expected the form module:function "
                          "(e.g. keyphrase_pipeline.synthetic.world:load_truth)")
    try:
        loader = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"truth_provider {spec!r} is not an importable module:function ({exc})") from None
    return loader(settings)
