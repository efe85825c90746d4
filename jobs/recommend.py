"""Entry point of stage ``recommend``: ``python jobs/recommend.py --ds D`` runs ``kp recommend --ds D``.

Top-K keyphrases per item from the index.
The stage's code is ``keyphrase_pipeline/stages/recommend.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp recommend --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["recommend", *sys.argv[1:]]))
