"""keyphrase-pipeline: advertiser keyphrase recommendation following eBay's LLMDistill4Ads design.

One importable package, so ``pip install`` adds a single top-level name:

- ``core``: settings, lake layout, data contracts, Spark sessions, errors, the command line (the foundation);
- ``models``: encoders, losses, metrics, training helpers, ONNX towers, ANN index (no stage logic);
- ``jobs``: one module per pipeline stage, each with a ``run`` that Airflow, the CLI and tests call;
- ``synthetic``: the simulated marketplace, the demo and the simulated judge (never imported by the others).
"""

__version__ = "0.1.0"
