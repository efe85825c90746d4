"""keyphrase-pipeline: advertiser keyphrase recommendation following eBay's LLMDistill4Ads design.

One importable package, so ``pip install`` adds a single top-level name; one room per kind of thing, each
importing only the rooms below it (docs/ARCHITECTURE.md has the map, import-linter enforces it):

- ``cli``: the ``kp`` command line;
- ``deploy``: Airflow standalone and ``kp demo``, the deployed topology natively, its end-to-end checks;
- ``synthetic``: the simulated marketplace, its truth, the simulated judge, the offline report (never imported by
  production code);
- ``orchestration``: the Airflow glue the DAG calls;
- ``commands``: what an operator runs by hand (promote, rollback, score, ...);
- ``stages``: the DAG's stages, one module each with a ``run`` that Airflow, the CLI and tests call, and the stage
  table ``STAGES``; no stage imports another;
- ``labels`` and ``artifacts``: what the stages share about labels (store, judges, training data) and about what
  they make (registry, serving);
- ``models``: encoders, losses, metrics, training helpers, ONNX towers, FAISS, top-K search (no stage logic);
- ``core``: settings, errors, the lake and its layout, data contracts, Spark sessions (the foundation).
"""

__version__ = "0.1.0"
