"""Entry point of stage ``ctr_labels``: ``spark-submit jobs/ctr_labels.py --ds D`` runs ``kp ctr-labels --ds D``.

Spark: daily aggregate + 30-day CTR labels for a logical date.
The stage's code is ``keyphrase_pipeline/stages/ctr_labels.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp ctr-labels --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["ctr-labels", *sys.argv[1:]]))
