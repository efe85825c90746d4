"""Start encoders for two probes of docs/TRAINING.md ("Levers that did not move the student"): a student that starts
from its teacher's encoder, and one that pools differently. Each is written as a sentence-transformers directory for
``train.base_model`` (``KP_TRAIN__BASE_MODEL``); nothing is trained here.

* ``--teacher DIR``: the transformer of a kept cross-encoder (``DIR/model``, from ``kp eval-labels --keep`` or
  ``kp train-cross``) with its classification head dropped, mean pooling and normalisation added: the layers that
  learned the judged distinctions jointly, as a bi-encoder.
* ``--pooling max|cls|mean``: the packaged all-MiniLM-L6-v2 with that pooling instead of its mean pooling.

    python bench/student_start.py --teacher /tmp/attr_keep/cross-1 --out /tmp/starts/teacher_body
    python bench/student_start.py --pooling max --out /tmp/starts/maxpool
    KP_TRAIN__BASE_MODEL=/tmp/starts/maxpool kp eval-labels --world attr --pairs 6000 --seeds 1 \\
        --cross '/tmp/attr_keep/cross-{seed}' --out bench/results/distill_sweep/attr_start_maxpool_s1.json

(the committed probes were run with the same code from /tmp/mm/cross1_as_bi and /tmp/mm/base_max, the paths their
``config.base_model`` records). Under ``kp eval-labels`` the start encoder is also the zero-shot baseline and the
encoder that picks the teacher-scored candidates, so only the teacher's and the student's figures compare with the
defaults' run. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_start(out: str, teacher: str | None = None, pooling: str = "mean", max_seq_length: int = 64) -> dict:
    """Write the start encoder to ``out`` (a new directory): the transformer of ``teacher``'s model (a kept
    cross-encoder's folder, or its ``model`` subfolder) or of the packaged base encoder, with ``pooling`` pooling and
    normalisation. Returns what was built. Raises FileNotFoundError when ``teacher`` holds no model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st_modules

    from keyphrase_pipeline.models.base import default_encoder_path

    src = default_encoder_path()
    if teacher:
        src = str(Path(teacher, "model")) if Path(teacher, "model", "config.json").is_file() else teacher
        if not Path(src, "config.json").is_file():
            raise FileNotFoundError(f"{teacher}: no model (config.json) there or in its model/ folder")
    transformer = st_modules.Transformer(src, max_seq_length=max_seq_length)
    model = SentenceTransformer(modules=[transformer, st_modules.Pooling(transformer.get_embedding_dimension(),
                                                                         pooling_mode=pooling),
                                         st_modules.Normalize()], device="cpu")
    model.save(out)
    return {"out": out, "from": src, "pooling": pooling, "max_seq_length": max_seq_length}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", default=None, help="a kept cross-encoder folder: start from its transformer")
    ap.add_argument("--pooling", default="mean", choices=("mean", "max", "cls"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    result = build_start(args.out, args.teacher, args.pooling)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
