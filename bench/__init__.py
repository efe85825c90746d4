"""The benchmarks and studies (docs/PERFORMANCE.md, docs/TRAINING.md). Each script runs as ``python bench/<name>.py``
and puts the repository root first on sys.path; this file makes ``bench`` a regular package there, so one script
imports another as ``bench.<name>`` (a regular package is found before a namespace portion such as tests/bench/)."""
