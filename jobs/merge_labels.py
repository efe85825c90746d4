"""Entry point of stage ``merge_labels``: ``python jobs/merge_labels.py --ds D`` runs ``kp merge-labels --ds D``.

Append the day's labelled shards to the label store and report stats.
The stage's code is ``keyphrase_pipeline/stages/merge_labels.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp merge-labels --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["merge-labels", *sys.argv[1:]]))
