"""The synthetic marketplace and everything built on it: demo and development tooling, never production.

``synth`` generates a marketplace (catalog, keyphrases, search logs with exposure and position bias) and
its hidden truth; ``world`` reads that truth back (``load_truth`` is the ``keyphrase_pipeline.core.truth`` provider that
evaluation and the UI use when ``KP_TRUTH_PROVIDER=keyphrase_pipeline.synthetic.world:load_truth``); ``simulated_judge`` is
the ``simulated`` judge backend; ``synth_labels`` makes judged pairs for recipe development; ``demo`` runs
the daily DAG on a generated world; ``report`` is the offline label-mix ablation.

Production modules (``jobs``, ``models``, ``kp``, ``dags``, ``plugins``) never import this package; they
load it by name only where configuration asks for it (tests/test_import_graph.py checks the import graph).
"""
