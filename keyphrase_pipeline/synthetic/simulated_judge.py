"""The synthetic marketplace's annotator as a judge (demo and tests).

It knows the world's hidden truth and answers like an LLM that agrees with it ``judge.simulated_accuracy``
of the time (``keyphrase_pipeline.synthetic.world.simulated_p_yes``). Its labels say so: ``judge=simulated``,
``judge_model=simulated-annotator-v1``. It costs nothing, so the demo runs anywhere; it proves the
plumbing, not the quality of a real LLM (see docs/LABELLING.md for SmolLM2's measured agreement).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.labels.judges.base import SIMULATED_MODEL, Judge, judge_model_id

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


class SimulatedJudge(Judge):
    """The synthetic world's annotator as a judge (no model): ``keyphrase_pipeline.synthetic.world.simulated_p_yes``.

    ``score(pairs)`` needs ``item_id`` and ``keyphrase_id`` columns and returns float64 P(yes) ``(n,)``, in
    0.75-0.99 for a yes and 0.01-0.25 for a no. Raises DataError (exit 3) when an id column is missing, when the
    lake holds no synthetic world (on first use), and from ``score_prompts`` (free-text prompts are not supported)."""

    name = "simulated"
    model = SIMULATED_MODEL
    runs_on = "no model (simulated annotator)"

    def __init__(self, settings: Settings, world=None):
        super().__init__(settings)
        self._world = world
        self.model = judge_model_id(settings)
        log.warning("judge is SIMULATED (%s, accuracy %.2f, %s errors): labels come from the synthetic world's "
                    "truth, not from an LLM", self.model, settings.judge.simulated_accuracy,
                    settings.judge.simulated_errors)

    @property
    def world(self):
        if self._world is None:
            from keyphrase_pipeline.synthetic.world import World

            self._world = World.load(self.settings)
        return self._world

    def score(self, pairs) -> np.ndarray:
        if len(pairs) == 0:
            return np.zeros(0, dtype=np.float64)
        for col in ("item_id", "keyphrase_id"):
            if col not in pairs:
                raise DataError(f"the simulated judge needs column {col!r} (ids into the synthetic world)")
        from keyphrase_pipeline.synthetic.world import simulated_p_yes

        p = simulated_p_yes(self.world, np.asarray(pairs["item_id"], dtype=np.int64),
                            np.asarray(pairs["keyphrase_id"], dtype=np.int64),
                            accuracy=self.settings.judge.simulated_accuracy, seed=self.settings.synth.seed,
                            errors=self.settings.judge.simulated_errors)
        return np.asarray(p, dtype=np.float64)

    def score_prompts(self, prompts: list[str]) -> np.ndarray:
        raise DataError("the simulated judge scores (item_id, keyphrase_id) pairs, not free-text prompts")
