"""Entry point of stage ``recommend``: ``python jobs/recommend.py --ds D`` runs ``kp recommend --ds D``.

Top-K keyphrases per item from the index.
The stage's code is ``keyphrase_pipeline/stages/recommend.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp recommend --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
