"""Entry point of stage ``publish``: ``python jobs/publish.py --ds D`` runs ``kp publish --ds D``.

Publish index, towers and recommendations as a new version (atomic).
The stage's code is ``keyphrase_pipeline/stages/publish.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp publish --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["publish", *sys.argv[1:]]))
