"""Entry point of stage ``select_pairs``: ``python jobs/select_pairs.py --ds D`` runs ``kp select-pairs --ds D``.

Spark: choose the day's pairs for the LLM judge, minus those already labelled.
The stage's code is ``keyphrase_pipeline/stages/select_pairs.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp select-pairs --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["select-pairs", *sys.argv[1:]]))
