"""Entry point of stage ``index``: ``python jobs/index.py --ds D`` runs ``kp index --ds D``.

Build the FAISS keyphrase index and measure its recall.
The stage's code is ``keyphrase_pipeline/stages/index.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp index --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
