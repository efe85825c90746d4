import numpy as np
import pytest

from keyphrase_pipeline.jobs.judges import get_judge
from keyphrase_pipeline.core.errors import DataError


def test_simulated_judge_follows_the_world(tiny_world, caplog):
    from keyphrase_pipeline.synthetic.world import World

    caplog.set_level("WARNING")
    judge = get_judge(tiny_world)
    assert judge.name == "simulated" and judge.model == "simulated-annotator-v1"
    assert "SIMULATED" in caplog.text
    world = World.load(tiny_world)
    kp = world.keyphrases.sample(300, random_state=0)
    items = world.items.sample(300, replace=True, random_state=1)
    import pandas as pd

    pairs = pd.DataFrame({"item_id": items["item_id"].to_numpy(), "keyphrase_id": kp["keyphrase_id"].to_numpy(),
                          "title": "t", "category": "c", "keyphrase": "k"})
    p = judge.score(pairs)
    truth = world.is_relevant(pairs["item_id"], pairs["keyphrase_id"])
    assert p.shape == (300,) and np.all((p >= 0) & (p <= 1))
    agree = np.mean((p >= 0.5) == truth)
    assert agree == pytest.approx(tiny_world.judge.simulated_accuracy, abs=0.06)
    assert np.array_equal(p, judge.score(pairs))  # same pair, same answer


def test_simulated_judge_needs_ids(settings):
    import pandas as pd

    from keyphrase_pipeline.synthetic.simulated_judge import SimulatedJudge

    j = SimulatedJudge(settings, world=object())
    with pytest.raises(DataError, match="item_id"):
        j.score(pd.DataFrame({"title": ["t"], "category": ["c"], "keyphrase": ["k"]}))
