"""The Airflow glue: what the DAG file in ``dags/`` calls, split by concern.

* ``planning``: which day a run processes, whether it trains (``RunPlan``), the demo's world and the input sensor;
* ``run_settings``: the settings one run works with (the trigger's params, demo mode's budget and judge);
* ``tasks``: the one task wrapper ``run_stage`` (a stage's ``run`` with the run's settings), which failures
  are retried, run stats and failure records, task arguments from the stage table, failure callbacks, the
  ``llm`` pool and the ``gpu`` queue;
* ``assets``: the lake's datasets as Airflow Assets;
* ``spark_submit``: the stages the DAG submits with spark-submit (``SparkSubmitStage``).

Nothing heavy is imported at module level: parsing a DAG file never imports torch, pyspark or faiss.
"""
