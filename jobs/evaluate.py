"""Entry point of stage ``evaluate``: ``python jobs/evaluate.py --ds D`` runs ``kp evaluate --ds D``.

Evaluate a student and gate its promotion against the champion.
The stage's code is ``keyphrase_pipeline/stages/evaluate.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp evaluate --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
