"""Entry point of stage ``train_ctr``: ``python jobs/train_ctr.py --ds D`` runs ``kp train-ctr --ds D``.

Train the CTR model (expected clicks) on impressions by position; gate; export.
The stage's code is ``keyphrase_pipeline/stages/train_ctr.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp train-ctr --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-ctr", *sys.argv[1:]]))
