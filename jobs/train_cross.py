"""Entry point of stage ``train_cross``: ``python jobs/train_cross.py --ds D`` runs ``kp train-cross --ds D``.

Fine-tune the cross-encoder assistant on LLM labels.
The stage's code is ``keyphrase_pipeline/stages/train_cross.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp train-cross --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-cross", *sys.argv[1:]]))
