"""Entry point of stage ``embed``: ``python jobs/embed.py --ds D`` runs ``kp embed --ds D``.

Spark + ONNX Runtime: embed items or keyphrases (incremental).
The stage's code is ``keyphrase_pipeline/stages/embed.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp embed --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
