"""Entry point of stage ``evaluate``: ``python jobs/evaluate.py --ds D`` runs ``kp evaluate --ds D``.

Evaluate a student and gate its promotion against the champion.
The stage's code is ``keyphrase_pipeline/stages/evaluate.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp evaluate --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
