"""Entry point of stage ``train_bi``: ``python jobs/train_bi.py --ds D`` runs ``kp train-bi --ds D``.

Train the bi-encoder student multi-task (CTR, LLM labels, cross-encoder KD).
The stage's code is ``keyphrase_pipeline/stages/train_bi.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp train-bi --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-bi", *sys.argv[1:]]))
