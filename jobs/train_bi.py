"""Entry point of stage ``train_bi``: ``python jobs/train_bi.py --ds D`` runs ``kp train-bi --ds D``.

Train the bi-encoder student multi-task (CTR, LLM labels, cross-encoder KD).
The stage's code is ``keyphrase_pipeline/stages/train_bi.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp train-bi --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-bi", *sys.argv[1:]]))
