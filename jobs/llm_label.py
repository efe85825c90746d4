"""Entry point of stage ``llm_label``: ``python jobs/llm_label.py --ds D`` runs ``kp llm-label --ds D``.

Label one shard (or all shards) of the day's pairs with the configured judge.
The stage's code is ``keyphrase_pipeline/stages/llm_label.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp llm-label --help``).
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # python jobs/<stage>.py puts jobs/ first: its file names must not shadow modules

from keyphrase_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["llm-label", *sys.argv[1:]]))
