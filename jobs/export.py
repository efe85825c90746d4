"""Entry point of stage ``export``: ``python jobs/export.py --ds D`` runs ``kp export --ds D``.

Export the champion's towers to ONNX (verified; optional int8).
The stage's code is ``keyphrase_pipeline/stages/export.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp export --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
