"""``kp label-reviews --export FILE``: the human verdicts on judged pairs (``keyphrase_pipeline.labels.reviews``) as
a ``--labels``-ready file."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from keyphrase_pipeline.labels.reviews import export

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings


def add_arguments(parser) -> None:
    """``kp label-reviews`` options (argparse)."""
    parser.add_argument("--export", required=True, metavar="FILE",
                        help="write the reviewed pairs as a --labels file (.parquet/.pq, .csv or .tsv)")
    parser.add_argument("--from", dest="from_ds", default=None, metavar="D",
                        help="first label store day (YYYY-MM-DD) whose reviewed pairs to export (default: all)")
    parser.add_argument("--to", dest="to_ds", default=None, metavar="D",
                        help="last label store day (YYYY-MM-DD) whose reviewed pairs to export (default: all)")


def main(settings: Settings, args) -> int:
    """``kp label-reviews --export FILE``: ``export``; prints its stats as one JSON line and returns 0."""
    print(json.dumps(export(settings, args.export, args.from_ds, args.to_ds)))
    return 0
