"""Entry point of stage ``export``: ``python jobs/export.py --ds D`` runs ``kp export --ds D``.

Export the champion's towers to ONNX (verified; optional int8).
The stage's code is ``keyphrase_pipeline/stages/export.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp export --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
