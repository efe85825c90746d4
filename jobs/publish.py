"""Entry point of stage ``publish``: ``python jobs/publish.py --ds D`` runs ``kp publish --ds D``.

Publish index, towers and recommendations as a new version (atomic).
The stage's code is ``keyphrase_pipeline/stages/publish.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp publish --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
