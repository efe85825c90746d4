"""Entry point of stage ``index``: ``python jobs/index.py --ds D`` runs ``kp index --ds D``.

Build the FAISS keyphrase index and measure its recall.
The stage's code is ``keyphrase_pipeline/stages/index.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp index --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
