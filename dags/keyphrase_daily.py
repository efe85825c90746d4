"""
### Keyphrase recommendations, daily (LLMDistill4Ads)

Every day at 02:00 UTC this DAG processes **the previous day** (`ds` = the data interval's start):

1. **ctr** - Spark job (`spark-submit jobs/ctr_labels.py`, connection `spark_default`): 30-day CTR labels.
2. **llm_labels** - choose the day's pairs minus those already judged, label them with the LLM judge
   fanned out over shards (mapped task, pool `llm`, queue `gpu`), merge the shards into the label store.
3. **train** - on training days only (`train.retrain_every_days`, or the `force_retrain` param, or when
   there is no champion yet): cross-encoder assistant, bi-encoder student, evaluation and promotion gate.
   On other days the group is skipped and the **champion** keeps serving.
4. **serve** - ONNX export of the champion's towers, Spark + ONNX Runtime embedding of items and
   keyphrases (incremental unless `full_reembed`), the CTR model on training days, FAISS index, top-K
   keyphrases per item with their expected CTR, atomic publish.

Every task is idempotent for its `ds`: clear a task (or the whole run) to redo it. Trigger it by hand
with the form's params (day, skip labelling, full re-embedding, retrain, promote, label budget,
cross-encoder re-rank depth, demo scale). Datasets flow as Assets (`kp://lake/...`), visible in the asset graph. Metrics of each stage
are in XCom and in the lake (`runs/ds=D/<stage>.json`), and on the **Keyphrases** page.
See docs/OPERATIONS.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLEntryOperator, HITLOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup, TriggerRule, get_current_context, task

from keyphrase_pipeline.core.settings import DAG_RUN_TIMEOUT_HOURS
from keyphrase_pipeline.orchestration import planning, reviews, spark_submit, tasks

DS = "{{ ti.xcom_pull(task_ids='plan.plan_day')['ds'] }}"
JOIN = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS

with DAG(
    dag_id=Path(__file__).stem,
    description="CTR + LLM labels -> distilled bi-encoder -> ONNX/Spark embeddings -> FAISS -> top-K keyphrases per item",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=dt.timedelta(hours=DAG_RUN_TIMEOUT_HOURS),
    tags=["keyphrases", "ads", "llm-distillation", "spark", "daily"],
    default_args={"owner": tasks.DAG_OWNER, "on_failure_callback": tasks.log_task_failure, **tasks.stage_args("plan")},
    on_failure_callback=tasks.log_dag_failure,
    deadline=reviews.publish_deadline(),  # published by dag.publish_deadline_hours after the data interval
    params={
        "ds": Param(None, type=["null", "string"], format="date", title="Day (ds)",
                    description="Process this day (YYYY-MM-DD) instead of the data interval's start."),
        "skip_llm": Param(False, type="boolean", title="Skip LLM labelling",
                          description="Do not select or judge new pairs today; train on the label store as it is."),
        "full_reembed": Param(False, type="boolean", title="Full re-embedding",
                              description="Embed every item and keyphrase again instead of only new or changed ones."),
        "force_retrain": Param(False, type="boolean", title="Force retraining",
                               description="Train the cross-encoder and bi-encoder even on a non-training day."),
        "force_promote": Param(False, type="boolean", title="Force promotion",
                               description="Promote the new bi-encoder even if it does not beat the champion."),
        "label_budget": Param(None, type=["null", "integer"], minimum=1, title="Label budget",
                              description="Most pairs sent to the LLM judge today (default: pairs.daily_budget)."),
        "rerank_depth": Param(None, type=["null", "integer"], minimum=0, title="Cross-encoder re-rank depth",
                              description="Re-order each item's top this many candidates by the cross-encoder "
                                          "before the top-K are kept (default: serve.rerank_depth, 0 = off; costs "
                                          "this many cross-encoder pairs per item searched: docs/SERVING.md)."),
        "scale": Param(None, type=["null", "string"], enum=[None, "tiny", "demo", "small", "large"],
                       title="Demo world scale",
                       description="Demo only: generate the synthetic marketplace at this scale when the lake has "
                                   "none, and train with the demo's small step budget."),
    },
) as dag:

    # ---- plan: which day, and what this run does -------------------------------------------------
    with TaskGroup("plan", tooltip="Resolve the day and what this run does") as plan_group:

        @task(doc_md="Resolve `ds` (param or data interval start), and decide labelling/training for the run.")
        def plan_day(params=None, data_interval_start=None, logical_date=None, run_after=None):
            return planning.plan_day(params, data_interval_start, logical_date, run_after)

        @task(doc_md="Demo only: generate the synthetic world at the `scale` param if the lake has no catalog.",
              **tasks.stage_args("synth", retries=1))
        def ensure_world(plan: planning.RunPlan, params=None):
            return planning.ensure_world(params, plan["ds"])

        @task.sensor(doc_md="Wait for the day's raw input (events, catalog snapshot, keyphrases; `kp inputs`): "
                            "checked every `dag.input_poke_minutes` without holding a worker slot, failed after "
                            "`dag.input_wait_hours`.", **planning.input_sensor_args())
        def wait_for_input(plan: planning.RunPlan, params=None):
            return planning.wait_for_input(params, plan["ds"])

        plan = plan_day()
        world = ensure_world(plan)
        ready = wait_for_input(plan)
        world >> ready

    # ---- ctr: Spark job ------------------------------------------------------------------------------
    with TaskGroup("ctr", tooltip="Spark: daily aggregate and 30-day CTR labels") as ctr_group:
        ctr_labels = spark_submit.SparkSubmitStage(  # a SparkSubmitOperator; exit codes 2-4 fail without retry
            task_id="ctr_labels",
            doc_md="`spark-submit jobs/ctr_labels.py --ds D` on connection `spark_default` "
                   "(local[*] here, a Spark master in compose/production).",
            application=spark_submit.spark_application("ctr_labels"),
            application_args=["--ds", DS],
            conn_id="spark_default",
            name="kp-ctr-labels",
            conf={"spark.ui.enabled": "false", "spark.sql.session.timeZone": "UTC"},
            **tasks.task_args("ctr_labels"),
        )

    # ---- llm_labels: select, judge (fan-out), merge --------------------------------------------------
    with TaskGroup("llm_labels", tooltip="Pairs for the LLM judge, labelled over shards, merged") as llm_group:

        @task.branch(doc_md="Skip the group when the `skip_llm` param is set.")
        def gate(plan: planning.RunPlan):
            return "llm_labels.select_pairs" if plan["label"] else "llm_labels.skipped"

        @task(doc_md="Spark: the day's pairs (CTR positives, unexposed top-K, hard negatives, random) "
                     "minus those already labelled, in shards.",
              **tasks.task_args("select_pairs"))
        def select_pairs(plan: planning.RunPlan, params=None):
            return tasks.run_stage("select_pairs", params, plan["ds"])

        @task(doc_md="The shard numbers to fan out over (one mapped labelling task each).")
        def shards(metrics: dict):
            return [int(s) for s in metrics["shards"]]

        @task(doc_md="Judge one shard with the configured LLM (pool `llm`, queue `gpu`). Shards already "
                     "labelled are not paid for twice.",
              map_index_template="shard {{ shard }}",
              **tasks.task_args("llm_label", retries=3))
        def llm_label(plan: planning.RunPlan, shard: int, params=None):
            get_current_context()["shard"] = shard  # names the mapped instance in the UI
            return tasks.run_stage("llm_label", params, plan["ds"], shard=int(shard))

        @task(doc_md="Merge the day's labelled shards into the label store (append-only by day).",
              trigger_rule=JOIN, **tasks.task_args("merge_labels"))
        def merge_labels(params=None, ti=None):
            # the plan is pulled, not passed: an XComArg edge from plan_day would satisfy the join's
            # "one success" and run the merge on days the group was skipped
            plan = ti.xcom_pull(task_ids="plan.plan_day")
            return tasks.run_stage("merge_labels", params, plan["ds"])

        skipped = EmptyOperator(task_id="skipped", doc_md="Labelling skipped by the `skip_llm` param.")
        pairs = select_pairs(plan)
        labelled = llm_label.partial(plan=plan).expand(shard=shards(pairs))
        merged = merge_labels()
        gate(plan) >> [pairs, skipped]
        [pairs, labelled] >> merged

    # ---- train: on training days only ----------------------------------------------------------------
    with TaskGroup("train", tooltip="Cross-encoder assistant, bi-encoder student, promotion gate") as train_group:

        @task.branch(doc_md="Train today? (`train.retrain_every_days`, `force_retrain`, or no champion yet).",
                     trigger_rule=JOIN)
        def decide(plan: planning.RunPlan):
            return "train.train_cross" if plan["train"] else "train.skip_training"

        @task(doc_md="Fine-tune the cross-encoder assistant on the LLM labels.",
              **tasks.task_args("train_cross"))
        def train_cross(plan: planning.RunPlan, params=None):
            return tasks.run_stage("train_cross", params, plan["ds"])

        @task(doc_md="Train the bi-encoder student multi-task (CTR MNRL, LLM contrastive, cross-encoder "
                     "Pearson KD), Matryoshka dims.",
              **tasks.task_args("train_bi"))
        def train_bi(plan: planning.RunPlan, cross: dict, params=None):
            return tasks.run_stage("train_bi", params, plan["ds"], cross=tasks.cross_ref(cross))

        @task(doc_md="Evaluate the challenger against the champion; promote it if it wins (or `force_promote`).",
              **tasks.task_args("evaluate"))
        def evaluate(plan: planning.RunPlan, bi: dict, params=None):
            return tasks.run_stage("evaluate", params, plan["ds"], candidate=(bi or {}).get("version"),
                                force_promote=plan["force_promote"])

        @task.short_circuit(doc_md="Does a person decide this promotion? (a close call, or a risky promotion: "
                                   "`review.*`). If not, the approval is skipped.",
                            ignore_downstream_trigger_rules=False)
        def approval_request(stats: dict):
            return reviews.approval_request(stats)

        approve_promotion = HITLOperator(
            task_id="approve_promotion",
            doc_md="Waits for a person (Required Actions, or the REST API): Approve promotes the challenger, Reject "
                   "keeps the champion; no answer within `review.approval_timeout_hours` keeps the champion.",
            subject="{{ ti.xcom_pull(task_ids='train.approval_request')['subject'] }}",
            body="{{ ti.xcom_pull(task_ids='train.approval_request')['body'] }}",
            **reviews.approval_args(),
        )

        @task(doc_md="Carry out the answer: promote on Approve; keep the champion on Reject or no answer (recorded "
                     "in the version's promotion.json and the day's evaluate stats).", **reviews.apply_args())
        def apply_approval(plan: planning.RunPlan, request: dict, answer: dict, params=None):
            return reviews.apply_approval(params, plan["ds"], request, answer)

        skip_training = EmptyOperator(task_id="skip_training",
                                      doc_md="Not a training day: the champion keeps serving.")
        cross = train_cross(plan)
        bi = train_bi(plan, cross)
        gated = evaluate(plan, bi)
        request = approval_request(gated)
        approved = apply_approval(plan, request, approve_promotion.output)
        request >> approve_promotion
        decide(plan) >> [cross, skip_training]

    # ---- review: label adjudication by a person (a side branch: nothing waits for it) ------------------
    with TaskGroup("review", tooltip="Pairs where the judge and the cross-encoder disagree most, to a person"):

        @task.short_circuit(doc_md="Pick the day's pairs where the judge and the cross-encoder disagree most "
                                   "(`review.adjudication_pairs`); none (no new labels, no cross-encoder): skipped.",
                            trigger_rule=JOIN, ignore_downstream_trigger_rules=False, **tasks.stage_args("evaluate"))
        def adjudication_request(plan: planning.RunPlan, params=None, dag_run=None):
            return reviews.adjudication_request(params, plan["ds"], getattr(dag_run, "run_type", None), plan["label"])

        adjudicate = HITLEntryOperator(
            task_id="adjudicate",
            doc_md="Waits for a person: relevant / not relevant / skip for each listed pair; no answer within "
                   "`review.adjudication_timeout_hours` records nothing.",
            subject="{{ ti.xcom_pull(task_ids='review.adjudication_request')['subject'] }}",
            body="{{ ti.xcom_pull(task_ids='review.adjudication_request')['body'] }}",
            **reviews.adjudication_args(),
        )

        @task(doc_md="Store the answers as human labels (the label review store; training reads them over the "
                     "judge's labels).", **tasks.stage_args("evaluate"))
        def record_adjudication(plan: planning.RunPlan, request: dict, answer: dict, params=None):
            return reviews.record_adjudication(params, plan["ds"], request, answer)

        adjudication = adjudication_request(plan)
        adjudication >> adjudicate
        record_adjudication(plan, adjudication, adjudicate.output)

    # ---- serve: export, embed, index, recommend, publish (always, with the champion) -----------------
    with TaskGroup("serve", tooltip="ONNX towers, embeddings, FAISS index, recommendations, publish") as serve_group:

        @task(doc_md="Export the champion's towers to ONNX (verified against torch).", trigger_rule=JOIN,
              **tasks.task_args("export"))
        def export(plan: planning.RunPlan, params=None):
            return tasks.run_stage("export", params, plan["ds"])

        @task(doc_md="Spark + ONNX Runtime: embed items (new/changed only unless `full_reembed`).",
              **tasks.task_args("embed", variant="items"))
        def embed_items(plan: planning.RunPlan, params=None):
            return tasks.run_stage("embed", params, plan["ds"], what="items", full=bool(plan["full_reembed"]))

        @task(doc_md="Spark + ONNX Runtime: embed keyphrases (new/changed only unless `full_reembed`).",
              **tasks.task_args("embed", variant="keyphrases"))
        def embed_keyphrases(plan: planning.RunPlan, params=None):
            return tasks.run_stage("embed", params, plan["ds"], what="keyphrases", full=bool(plan["full_reembed"]))

        @task(doc_md="Build the FAISS keyphrase index and measure its recall@K (refuses below the floor).",
              **tasks.task_args("index"))
        def index(plan: planning.RunPlan, params=None):
            return tasks.run_stage("index", params, plan["ds"])

        @task.branch(doc_md="Train the CTR model today? (training days, as for the student).")
        def ctr_decide(plan: planning.RunPlan):
            return "serve.train_ctr" if plan["train"] else "serve.keep_ctr_model"

        @task(doc_md="Train the CTR model (expected clicks) on the window's impressions by position with the "
                     "serving student's embeddings; promote it if it beats the CTR champion on held-out days.",
              **tasks.task_args("train_ctr"))
        def train_ctr(plan: planning.RunPlan, params=None):
            return tasks.run_stage("train_ctr", params, plan["ds"])

        @task(doc_md="Top-K keyphrases per item from the index, each with the CTR model's expected CTR.",
              trigger_rule=JOIN, **tasks.task_args("recommend"))
        def recommend(plan: planning.RunPlan, params=None):
            return tasks.run_stage("recommend", params, plan["ds"])

        @task(doc_md="Publish index, towers and recommendations as a new serving version (atomic switch).",
              **tasks.task_args("publish"))
        def publish(plan: planning.RunPlan, params=None):
            return tasks.run_stage("publish", params, plan["ds"])

        exported = export(plan)
        items = embed_items(plan)
        keyphrases = embed_keyphrases(plan)
        indexed = index(plan)
        ctr_model = train_ctr(plan)
        keep_ctr = EmptyOperator(task_id="keep_ctr_model", doc_md="Not a training day: the CTR champion keeps "
                                 "scoring (if it reads this student's embeddings).")
        recs = recommend(plan)
        published = publish(plan)
        exported >> [items, keyphrases]
        keyphrases >> indexed
        [items, keyphrases] >> ctr_decide(plan) >> [ctr_model, keep_ctr]
        [items, indexed, ctr_model, keep_ctr] >> recs >> published

    # ---- wiring between groups ----------------------------------------------------------------------
    ready >> ctr_labels >> llm_group
    [merged, skipped] >> train_group
    [gated, approved, skip_training] >> exported
    [gated, skip_training] >> adjudication


if __name__ == "__main__":  # `python dags/keyphrase_daily.py [YYYY-MM-DD]`: one in-process run
    import sys

    reviews.without_deadline(dag).test(run_conf={"ds": sys.argv[1]} if len(sys.argv) > 1 else None)
