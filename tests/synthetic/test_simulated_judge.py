import numpy as np
import pytest

from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.labels.judges import get_judge


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


@pytest.fixture(scope="module")
def demo_world_pairs():
    """20,000 (item, keyphrase) pairs of the demo development world: 70% of the item's own product type."""
    from keyphrase_pipeline.synthetic import synth_labels as sl
    from keyphrase_pipeline.synthetic.world import World

    w = sl.WORLDS["demo"]
    items, kps, truth, _ = sl._world(w["seed"], w["items"])
    world = World(items, kps, {})
    rng = np.random.default_rng(0)
    ii = rng.integers(len(items), size=20_000)
    by_type = {t: np.flatnonzero(truth.kp_type == t) for t in np.unique(truth.kp_type)}
    kk = np.array([rng.choice(by_type[truth.item_type[i]]) if rng.random() < 0.7 else rng.integers(len(kps))
                   for i in ii])
    # + 2,000 accessories made for the model a keyphrase names (another product type, the same compat value)
    from keyphrase_pipeline.synthetic.world import SLOTS

    c = SLOTS.index("compat")
    k_compat = np.flatnonzero(truth.kp_codes[:, c] >= 0)
    extra_i, extra_k = [], []
    while len(extra_i) < 2000:
        k = rng.choice(k_compat)
        cand = np.flatnonzero((truth.item_codes[:, c] == truth.kp_codes[k, c]) & (truth.item_type != truth.kp_type[k]))
        if len(cand):
            extra_i.append(rng.choice(cand))
            extra_k.append(k)
    return world, np.concatenate([ii, extra_i]), np.concatenate([kk, extra_k])


def test_llm_like_annotator_errs_where_llm_judges_do(demo_world_pairs):
    """Lenient on attribute mismatches and on accessories made for the named model, errors correlated within a
    product type, confident where it is right; the iid annotator does none of these."""
    from keyphrase_pipeline.synthetic.world import SLOTS, simulated_p_yes

    world, ii, kk = demo_world_pairs
    t = world.truth
    iid_, kid = t.item_ids[ii], t.kp_ids[kk]
    rel = world.is_relevant(iid_, kid)
    same = t.item_type[ii] == t.kp_type[kk]
    c = SLOTS.index("compat")
    made_for = ~same & (t.kp_codes[kk, c] >= 0) & (t.kp_codes[kk, c] == t.item_codes[ii, c])
    near_miss = same & ~rel
    other = ~same & ~made_for
    out = {}
    for errors in ("iid", "llm"):
        p = simulated_p_yes(world, iid_, kid, accuracy=0.9, seed=7, errors=errors)
        yes = p >= 0.5
        types = t.item_type[ii][near_miss]
        per_type = [yes[near_miss][types == ty].mean() for ty in np.unique(types) if (types == ty).sum() >= 30]
        right = yes == rel
        out[errors] = {"fpr_near": yes[near_miss].mean(), "fpr_made_for": yes[made_for].mean(),
                       "fpr_other": yes[other].mean(), "type_spread": np.std(per_type),
                       "conf_gap": np.abs(p - 0.5)[right].mean() - np.abs(p - 0.5)[~right].mean(),
                       "agree": right.mean()}
        assert np.array_equal(p, simulated_p_yes(world, iid_, kid, accuracy=0.9, seed=7, errors=errors))
    llm, iid = out["llm"], out["iid"]
    assert made_for.sum() > 100 and near_miss.sum() > 1000, (made_for.sum(), near_miss.sum())
    assert llm["fpr_near"] > 5 * llm["fpr_other"] and llm["fpr_made_for"] > 5 * llm["fpr_other"], llm
    assert iid["fpr_near"] < 1.5 * iid["fpr_other"], iid  # iid errors do not care what the pair is
    assert llm["type_spread"] > 2 * iid["type_spread"], (llm, iid)
    assert llm["conf_gap"] > 0.1 and abs(iid["conf_gap"]) < 0.05, (llm, iid)
    assert 0.8 < llm["agree"] < 0.92, llm
    with pytest.raises(ValueError, match="iid' or 'llm"):
        simulated_p_yes(world, iid_[:3], kid[:3], errors="nope")


def test_llm_like_annotator_is_another_judge(tiny_world):
    """Its labels carry their own judge id, so they never pass for (or dedupe against) the iid annotator's."""
    llm = get_judge(tiny_world.with_overrides(**{"judge.simulated_errors": "llm"}))
    assert llm.model == "simulated-llm-annotator-v1" and get_judge(tiny_world).model == "simulated-annotator-v1"
