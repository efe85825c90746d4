"""The synthetic marketplace and everything built on it: demo and development tooling, never production.

``synth`` generates a marketplace (catalog, keyphrases, search logs with exposure and position bias) and
its hidden truth; ``world`` reads that truth back (``load_truth`` is the ``keyphrase_pipeline.core.truth`` provider that
evaluation and the UI use when ``KP_TRUTH_PROVIDER=keyphrase_pipeline.synthetic.world:load_truth``); ``simulated_judge`` is
the ``simulated`` judge backend and ``judge_server`` its stand-in HTTP server; ``synth_labels`` makes judged pairs
for recipe development; ``report`` is the offline label-mix ablation and ``judge_quality`` a judge's stored labels
against the truth. ``keyphrase_pipeline.deploy.demo`` runs the daily DAG on a generated world.

Production code (every room but this one and the demo runners in ``deploy``, the DAG, the UI plugin) never
imports this package; it loads it by name only where configuration asks for it (tests/test_import_graph.py checks
the import graph).
"""
