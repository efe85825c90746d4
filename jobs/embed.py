"""Entry point of stage ``embed``: ``python jobs/embed.py --ds D`` runs ``kp embed --ds D``.

Spark + ONNX Runtime: embed items or keyphrases (incremental).
The stage's code is ``keyphrase_pipeline/stages/embed.py``; this file only hands
the command line to ``kp`` (same options, same exit codes: ``kp embed --help``).
"""

import sys

from keyphrase_pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
