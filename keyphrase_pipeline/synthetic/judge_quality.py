"""How good is the judge that labelled a synthetic lake? Its stored labels against the world's hidden truth.

``kp judge-quality [--ds D] [--out FILE] [--plot FILE]``: every pair of the label store up to ``ds`` that names
a catalog item and a keyphrase of the world (``item_id`` and ``keyphrase_id`` >= 0), grouped by the judge that
labelled it (``judge``, ``judge_model``: a lake labelled by SmolLM2 behind vLLM says ``openai`` /
``smollm2-135m``; the simulated annotators say ``simulated``):

* **ranking**: ROC AUC of the stored P(yes) against the truth (``sklearn.metrics.roc_auc_score``);
* **decisions at** ``judge.threshold`` (the current setting, recomputed from P(yes)): yes-rate, agreement with the
  truth, precision and recall of a yes, and the truly relevant share (the base rate the yes-rate should approach);
  ``stored_yes_rate`` is the share of the stored labels that say relevant, at the threshold of their labelling run;
* **calibration**: ``bins`` equal-width P(yes) bins, each with its pairs, mean P(yes) and truly relevant share
  (a reliability diagram: a calibrated judge's points lie on the diagonal), and the expected calibration error
  (ECE: the pairs-weighted mean of |mean P(yes) - relevant share| over the bins; Naeini et al. 2015);
* the same per store day, so a judge that drifts shows it.

Only a synthetic lake has a truth: a lake without ``synth/world.json`` is refused (DataError, exit 3). The
figures are about the judge on the synthetic world's pairs; SmolLM2's, for example, say how a real but weak
LLM judges made-up titles, not how it judges a real catalog.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import Lake, ds_str
from keyphrase_pipeline.models.metrics import auc_or_none

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)


def calibration_bins(p_yes: np.ndarray, relevant: np.ndarray, bins: int = 10) -> tuple[list[dict], float]:
    """(bins, ECE) of P(yes) against the truth.

    Args:
        p_yes: ``(n,)`` floats in [0, 1], the judge's P(yes).
        relevant: ``(n,)`` bools, the truth.
        bins: number of equal-width bins over [0, 1] (the last one closed).
    Returns:
        one dict per non-empty bin, ``lo, hi, pairs, mean_p_yes, relevant_share``, in order; and the expected
        calibration error, the pairs-weighted mean of ``|mean_p_yes - relevant_share|`` (0.0 for no pairs).
    Raises:
        ValueError: ``bins`` < 1 or the arrays differ in length."""
    p, y = np.asarray(p_yes, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if bins < 1 or p.shape != y.shape:
        raise ValueError(f"need bins >= 1 and arrays of one length, got bins={bins}, {p.shape} and {y.shape}")
    which = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        mean_p, share = float(p[m].mean()), float(y[m].mean())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "pairs": int(m.sum()), "mean_p_yes": round(mean_p, 4),
                    "relevant_share": round(share, 4)})
        ece += m.sum() * abs(mean_p - share)
    return out, (float(ece / len(p)) if len(p) else 0.0)


def judge_metrics(p_yes: np.ndarray, relevant: np.ndarray, threshold: float, bins: int = 10) -> dict:
    """Ranking, decisions and calibration of one judge's P(yes) against the truth (module docstring).

    Args:
        p_yes: ``(n,)`` floats in [0, 1]; relevant: ``(n,)`` bools; threshold: a yes is ``p_yes >= threshold``.
    Returns:
        ``pairs, relevant_share, auc`` (None when the truth has one class), ``yes_rate, agreement, precision``
        (None without a yes), ``recall`` (None without a relevant pair), ``mean_p_yes_relevant`` /
        ``_irrelevant``, ``calibration`` (``calibration_bins``) and ``ece``."""

    p, y = np.asarray(p_yes, dtype=np.float64), np.asarray(relevant, dtype=bool)
    yes = p >= threshold
    cal, ece = calibration_bins(p, y, bins)

    def r4(v):
        return None if v is None else round(float(v), 4)

    return {"pairs": int(len(p)), "relevant_share": r4(y.mean() if len(y) else None),
            "auc": r4(auc_or_none(y, p)),
            "yes_rate": r4(yes.mean() if len(p) else None), "agreement": r4((yes == y).mean() if len(p) else None),
            "precision": r4((y & yes).sum() / yes.sum() if yes.any() else None),
            "recall": r4((y & yes).sum() / y.sum() if y.any() else None),
            "mean_p_yes_relevant": r4(p[y].mean() if y.any() else None),
            "mean_p_yes_irrelevant": r4(p[~y].mean() if (~y).any() else None),
            "threshold": float(threshold), "calibration": cal, "ece": round(ece, 4)}


def labels_vs_truth(settings: Settings, ds: str | None = None, world=None, bins: int = 10) -> dict:
    """The label store up to ``ds`` (default: all of it) against the synthetic world's truth, per judge.

    Returns ``{"ds", "threshold", "judges": [{"judge", "judge_model", **judge_metrics, "per_day": {ds:
    {pairs, auc, yes_rate, agreement}}}], "skipped_pairs"}``: one entry per (judge, judge_model) with stored
    pairs, largest first; ``skipped_pairs`` counts rows without a world id (a user's ``--labels`` rows).
    Raises DataError (exit 3) when the lake has no synthetic world or no stored labels up to ``ds``."""
    from keyphrase_pipeline.labels.store import read_labels
    from keyphrase_pipeline.synthetic.world import load_truth

    lake = Lake.from_settings(settings)
    if world is None:
        world = load_truth(settings)
        if world is None:
            raise DataError(f"{lake.root} has no synthetic world ({layout.synth_world_meta_path(lake)}): the judge "
                            "can only be measured against a synthetic world's truth")
    upto = ds_str(ds) if ds else None
    df = read_labels(settings, upto_ds=upto)
    if not len(df):
        raise DataError(f"no labels in the label store {lake.path('llm_store')}" + (f" up to {upto}" if upto else ""))
    known = (df["item_id"].to_numpy() >= 0) & (df["keyphrase_id"].to_numpy() >= 0)
    df = df[known].reset_index(drop=True)
    df["relevant"] = world.is_relevant(df["item_id"].to_numpy(np.int64), df["keyphrase_id"].to_numpy(np.int64))
    threshold = settings.judge.threshold
    judges = []
    for (judge, model), g in sorted(df.groupby(["judge", "judge_model"]), key=lambda kv: -len(kv[1])):
        rec = {"judge": judge, "judge_model": model,
               **judge_metrics(g["p_yes"].to_numpy(), g["relevant"].to_numpy(), threshold, bins),
               "stored_yes_rate": round(float(g["label"].mean()), 4)}  # as labelled, at that run's threshold
        rec["per_day"] = {d: {k: v for k, v in judge_metrics(h["p_yes"].to_numpy(), h["relevant"].to_numpy(),
                                                             threshold, bins).items()
                              if k in ("pairs", "auc", "yes_rate", "agreement", "relevant_share")}
                          for d, h in g.groupby("ds")}
        judges.append(rec)
        log.info("judge %s/%s on %d stored pairs vs the truth: AUC %s, yes-rate %s (relevant share %s), agreement "
                 "%s, ECE %s", judge, model, rec["pairs"], rec["auc"], rec["yes_rate"], rec["relevant_share"],
                 rec["agreement"], rec["ece"])
    return {"ds": upto, "threshold": threshold, "judges": judges, "skipped_pairs": int((~known).sum()),
            "simulated_world": True}


def calibration_plot(result: dict, path: str | Path) -> str:
    """A reliability diagram of every judge in ``result`` (``labels_vs_truth``): mean P(yes) per bin against the
    bin's truly relevant share, point size by pairs, the diagonal of a calibrated judge; written as PNG to
    ``path`` (its folder created); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
    for j in result["judges"]:
        cal = j["calibration"]
        xs, ys = [c["mean_p_yes"] for c in cal], [c["relevant_share"] for c in cal]
        size = [20 + 180 * c["pairs"] / max(1, j["pairs"]) for c in cal]
        ax.plot(xs, ys, marker=None, lw=1)
        ax.scatter(xs, ys, s=size, label=f"{j['judge']} / {j['judge_model']}: AUC {j['auc']}, ECE {j['ece']}")
    ax.axvline(result["threshold"], color="black", lw=0.8, ls=":")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("judge's P(yes), mean per bin")
    ax.set_ylabel("truly relevant share (synthetic truth)")
    ax.set_title("Judge calibration against the synthetic world's truth", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def add_arguments(parser) -> None:
    """Add this command's options to ``parser`` (argparse)."""
    parser.add_argument("--ds", default=None, help="the last store day to read (default: every day)")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins over [0, 1] (default 10)")
    parser.add_argument("--out", default=None, help="also write the result JSON to this file")
    parser.add_argument("--plot", default=None, help="also write the reliability diagram (PNG) to this file")


def main(settings: Settings, args) -> int:
    """``kp judge-quality``: print ``labels_vs_truth`` as JSON (and write ``--out``/``--plot``); returns 0.
    ConfigError (exit 2): ``--bins`` under 1, a ``--plot`` name not ending in .png (checked before any work);
    DataError (exit 3): no synthetic world or no stored labels."""

    if args.bins < 1:
        raise ConfigError(f"--bins must be at least 1, got {args.bins}")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise ConfigError(f"--plot writes a PNG: give a file name ending in .png, got {args.plot}")
    result = labels_vs_truth(settings, args.ds, bins=args.bins)
    if args.plot:
        result["plot"] = calibration_plot(result, args.plot)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
