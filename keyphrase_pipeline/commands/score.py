"""Score arbitrary (title, category, keyphrase) pairs with a trained model.

``kp score --model DIR|VERSION --pairs FILE --out FILE`` writes the input rows (text columns as typed) plus a
``score`` column and, when the model stores a decision threshold (chosen on its held-out pairs at training
time), a ``predicted_label`` column (``score >= threshold``), as CSV or parquet by the output file's extension; for a
student with a hybrid score, a last ``cosine`` column holds the cosine alone (``score`` minus the lexical bonus), so
the two can be compared row by row without editing the model. The model may be:

* a cross-encoder directory (ours: ``registry/cross/<v>/`` or its ``model/``): score = P(relevant);
* a bi-encoder student directory or a registry student version id: score = cosine of the two towers at
  ``serve.dim`` (the serving cut), plus the student's lexical bonus when it has a hybrid score
  (``keyphrase_pipeline.models.lexical_match``, stored in its ``kp_model.json``);
* an ONNX export (``kp export`` output: ``registry/students/<v>/onnx/`` with ``item/`` and
  ``keyphrase/`` towers): score = cosine of the exported towers' embeddings (plus its student's lexical bonus),
  the serving numbers.

The kind is detected from the directory (``keyphrase_pipeline.models.bi_encoder.model_kind``). New scorers plug in through
``register_scorer(kind, factory)``, ``factory(settings, model_dir) -> Scorer`` where a Scorer has
``kind`` and ``score(frame) -> numpy array`` (and, optionally, the ``tokenizer`` its model reads with).

Text columns are read as text (a CSV's ``007``, ``1e3``, ``NA`` or ``null`` is never turned into a
number or a missing value) and written back exactly as read; the model sees them normalised by
``keyphrase_pipeline.models.text.clean``. A title or keyphrase that is blank after normalisation
(whitespace, zero-width, BOM or bidi characters only), or whose tokens under the model's tokenizer are all
special/unknown (emoji-only: all ``[UNK]``), is refused with a DataError naming the file, column and row:
it would get the same score as every other such text.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from keyphrase_pipeline.artifacts import registry
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.core.lake import write_parquet_file_atomic, write_text_atomic
from keyphrase_pipeline.core.user_files import read_user_table
from keyphrase_pipeline.models.onnx_tower import get_tower
from keyphrase_pipeline.models.text import clean, item_text, keyphrase_text, unreadable_mask

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("title", "category", "keyphrase")
OUTPUT_COLUMNS = ("score", "predicted_label", "cosine")  # what a run may write; an input's are a previous run's
SUFFIXES = (".csv", ".parquet", ".pq")  # --pairs is read and --out written by extension


class Scorer(Protocol):
    """A loaded model that scores pairs: ``kind`` names it; ``score(pairs)`` takes a pandas DataFrame with str
    columns ``title, category, keyphrase`` (cleaned) and returns a float ``np.ndarray`` of shape ``(len(pairs),)``.
    An optional ``threshold`` attribute (float or None) is the model's decision cut on that scale; an optional
    ``score_columns(pairs)`` returns ``{"score": ..., other name: array}`` when the model has more to show per pair
    (a hybrid student: ``cosine``), each float ``(len(pairs),)``."""

    kind: str

    def score(self, pairs) -> "object": ...


def hybrid_columns(hybrid, cosines, pairs) -> dict:
    """``models.bi_encoder.served_columns`` of ``pairs`` (a DataFrame with str ``title, category, keyphrase``):
    ``score`` as served, and ``cosine`` when ``hybrid`` is not None."""
    from keyphrase_pipeline.models.bi_encoder import served_columns

    return served_columns(hybrid, cosines, pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist())


def _marker_dirs(model_dir: str | Path) -> tuple[Path, ...]:
    """Where a model's ``kp_model.json`` may be: its directory and, for an ONNX export
    (registry/students/<v>/onnx/), its student's (registry/students/<v>/model/)."""
    d = Path(model_dir)
    return (d, Path(layout.version_model_dir(d.parent))) if (d / layout.EXPORT_RECORD).exists() else (d,)


def stored_threshold(model_dir: str | Path) -> float | None:
    """The decision threshold saved with a model (``kp_model.json``; for an ONNX export, its student's)."""
    from keyphrase_pipeline.models.bi_encoder import read_marker

    for candidate in _marker_dirs(model_dir):
        value = read_marker(candidate).get("threshold")
        if value is not None:
            return float(value)
    return None


def stored_hybrid(model_dir: str | Path):
    """The student's hybrid score (``models.lexical_match``) saved with a model (for an ONNX export, its
    student's), or None. Raises ConfigError (exit 2) for one this code cannot compute."""
    from keyphrase_pipeline.models.bi_encoder import MARKER, load_hybrid

    for candidate in _marker_dirs(model_dir):
        if (candidate / MARKER).exists():
            hybrid = load_hybrid(candidate)
            if hybrid is not None:
                return hybrid
    return None


class CrossScorer:
    """A cross-encoder directory; ``score`` gives float32 P(relevant) in [0, 1], shape ``(n,)``.

    Raises ConfigError (exit 2) when ``model_dir`` has no ``config.json``."""

    kind = "cross"

    def __init__(self, settings: Settings, model_dir: str):
        from keyphrase_pipeline.models.cross_encoder import load_cross

        self.model = load_cross(model_dir, settings.train.device)
        self.tokenizer = self.model.tokenizer
        self.threshold = stored_threshold(model_dir)

    def score(self, pairs):
        from keyphrase_pipeline.models.cross_encoder import predict_pairs

        return predict_pairs(self.model, pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist())


class BiScorer:
    """A bi-encoder student; ``score`` gives its served score, float32 ``(n,)``: the cosine in [-1, 1] at
    ``serve.dim``, plus the hybrid score's lexical bonus when the model has one (``models.lexical_match``).

    The stored threshold was chosen at the ``serve.dim`` of training: with another ``serve.dim`` now, scores and
    threshold are on different cuts. Raises ConfigError (exit 2) when there is no ``modules.json``."""

    kind = "bi"

    def __init__(self, settings: Settings, model_dir: str):
        from keyphrase_pipeline.models.bi_encoder import load_student

        self.model = load_student(model_dir, settings.train.device)
        self.tokenizer = self.model.tokenizer
        self.dim = settings.serve.dim
        self.threshold = stored_threshold(model_dir)
        self.hybrid = stored_hybrid(model_dir)

    def score_columns(self, pairs) -> dict:
        """``hybrid_columns`` of the cosines at ``serve.dim``: ``score`` as served, ``cosine`` with a hybrid score."""
        from keyphrase_pipeline.models.bi_encoder import score_pairs

        cosines = score_pairs(self.model, pairs["title"].tolist(), pairs["category"].tolist(), pairs["keyphrase"].tolist(),
                              dim=self.dim)
        return hybrid_columns(self.hybrid, cosines, pairs)

    def score(self, pairs):
        return self.score_columns(pairs)["score"]


class OnnxScorer:
    """The exported towers as served (ONNX Runtime; the int8 file when the export kept it).

    ``score`` gives float32 cosine in [-1, 1] at the export's dim, shape ``(n,)``, plus its student's hybrid
    bonus when the student has one (``models.lexical_match``). Raises DataError (exit 3) without ``export.json`` or
    when a tower's files are missing."""

    kind = "onnx"

    def __init__(self, settings: Settings, model_dir: str):

        meta_path = Path(model_dir) / layout.EXPORT_RECORD
        if not meta_path.exists():
            raise DataError(f"{model_dir}: ONNX files without export.json are not a verified `kp export` output")
        meta = json.loads(meta_path.read_text())
        model_file = meta.get("model_file", "model.onnx")
        self.threshold = stored_threshold(model_dir)
        self.hybrid = stored_hybrid(model_dir)
        self.item = get_tower(Path(model_dir) / "item", model_file, settings.serve.device)
        self.keyphrase = get_tower(Path(model_dir) / "keyphrase", model_file, settings.serve.device)
        self.tokenizer = self.keyphrase.tokenizer

    def score_columns(self, pairs) -> dict:
        """``hybrid_columns`` of the exported towers' cosines: ``score`` as served, ``cosine`` with a hybrid score."""
        items = self.item.embed([item_text(t, c) for t, c in zip(pairs["title"], pairs["category"], strict=True)])
        keyphrases = self.keyphrase.embed([keyphrase_text(k) for k in pairs["keyphrase"]])
        cosines = (items * keyphrases).sum(axis=1)  # both normalised inside the graph: dot = cosine
        return hybrid_columns(self.hybrid, cosines, pairs)

    def score(self, pairs):
        return self.score_columns(pairs)["score"]


SCORERS: dict[str, Callable] = {"cross": CrossScorer, "bi": BiScorer, "onnx": OnnxScorer}


def register_scorer(kind: str, factory: Callable) -> None:
    """Plug in a scorer for a model kind (e.g. ``onnx``): ``factory(settings, model_dir) -> Scorer``."""
    SCORERS[kind] = factory


def resolve_model_dir(settings: Settings, model: str) -> str:
    """A directory, or a registry student version id -> the directory holding the model files.

    A registry version id is looked up among students, then cross-encoders. Raises ConfigError (exit 2) when
    ``model`` is neither a directory nor a version (or the lookup needs a non-local registry)."""
    p = Path(model)
    if p.is_dir():
        if (p / layout.EXPORT_RECORD).exists():
            return str(p)
        version_model = layout.version_model_dir(p)
        return version_model if Path(version_model).is_dir() and not (p / "item.onnx").exists() else str(p)

    if registry.exists(settings, model, "students"):
        return layout.model_dir(settings, model)
    if registry.exists(settings, model, "cross"):
        return layout.model_dir(settings, model, "cross")
    raise ConfigError(f"--model {model!r}: not a directory nor a registry version")


def load_scorer(settings: Settings, model: str) -> Scorer:
    """The registered scorer for ``model`` (directory or version id), loaded.

    Raises ConfigError (exit 2): ``model`` not found, its kind unknown, or no scorer registered for the kind;
    and what the scorer's constructor raises (ConfigError for missing model files, DataError for an ONNX
    directory that is not a verified export)."""
    from keyphrase_pipeline.models.bi_encoder import model_kind

    model_dir = resolve_model_dir(settings, model)
    kind = model_kind(model_dir)
    if kind is None:
        raise ConfigError(f"{model_dir}: cannot tell which model this is (no kp_model.json, config.json or ONNX towers)")
    if kind not in SCORERS:
        raise ConfigError(f"{model_dir} is a {kind!r} model but no scorer is registered for it "
                          f"(have: {sorted(SCORERS)}); see keyphrase_pipeline.commands.score.register_scorer")
    return SCORERS[kind](settings, model_dir)


def read_pairs(path: str):
    """Read ``--pairs``: (frame as read, copy with ``title, category, keyphrase`` normalised by ``clean``).

    CSV: every column as text (``dtype=str``, no NA guessing: ``007`` and ``NA`` stay as written); ``.parquet``/``.pq``:
    parquet, as stored (``keyphrase_pipeline.core.user_files.read_user_table``). Both frames have the file's columns
    plus ``category`` ("" when absent).
    Raises ConfigError (exit 2): another extension. DataError (exit 3): no such file, unreadable, a header naming a
    column twice, no ``title`` or ``keyphrase`` column, a blank title or keyphrase (the count and first row named)."""
    import numpy as np

    if Path(path).suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--pairs {path}: use a .csv or .parquet file (read by its extension)")
    df = read_user_table(path, "--pairs")
    missing = [c for c in ("title", "keyphrase") if c not in df.columns]
    if missing:
        raise DataError(f"--pairs {path}: missing column(s) {missing}; need title, category (may be empty), keyphrase")
    if "category" not in df.columns:
        df["category"] = ""
    clean_df = df.copy()
    for c in PAIR_COLUMNS:
        clean_df[c] = [clean(v) for v in df[c]]
    for c in ("title", "keyphrase"):
        rows = np.flatnonzero(clean_df[c].to_numpy() == "")
        if len(rows):
            raise DataError(f"--pairs {path}: {len(rows)} row(s) with empty {c!r} (first at 0-based row {int(rows[0])})")
    return df, clean_df


def check_readable(clean_df, tokenizer, path: str) -> None:
    """DataError naming the column, count and first row when a (normalised) title or keyphrase gives
    ``tokenizer`` only special/unknown tokens (``keyphrase_pipeline.models.text.unreadable_mask``)."""
    import numpy as np

    for c in ("title", "keyphrase"):
        rows = np.flatnonzero(unreadable_mask(clean_df[c].tolist(), tokenizer))
        if len(rows):
            raise DataError(f"--pairs {path}: {len(rows)} row(s) with unreadable {c!r}: every token is unknown to "
                            f"the model, e.g. emoji only (first at 0-based row {int(rows[0])}: {clean_df[c].iloc[rows[0]]!r})")


def write_frame(df, path: str) -> None:
    """Write the pandas DataFrame ``df`` atomically as CSV (``.csv``) or parquet (``.parquet``, ``.pq``).

    Raises ConfigError (exit 2) for another extension."""

    p = Path(path)
    if p.suffix.lower() == ".csv":
        write_text_atomic(str(p.resolve()), df.to_csv(index=False))
    elif p.suffix.lower() in (".parquet", ".pq"):
        write_parquet_file_atomic(df, str(p.resolve()))
    else:
        raise ConfigError(f"--out {path}: use a .csv or .parquet file name")


def run(settings: Settings, model: str, pairs: str, out: str) -> dict:
    """Score the pairs in ``pairs`` with ``model``; write rows + ``score`` to ``out``; return stats.

    The output has the input rows, ``score`` (float: P(relevant) for a cross-encoder, cosine at ``serve.dim``
    for a student or ONNX export, plus its hybrid score's lexical bonus when it has one), when the model stores
    a threshold, ``predicted_label`` (int8 0/1), and for a student or export with a hybrid score ``cosine`` (float:
    the cosine alone, at the same cut), in that order after the input's columns. The stats say which: ``columns``; an
    input column of the same name (a file scored before) is replaced and moved last (``replaced_input_columns``,
    logged), and an input's ``OUTPUT_COLUMNS`` this model does not write are dropped (``dropped_input_columns``,
    logged: a cross-encoder's run on a student's output keeps no stale ``cosine``); any other input column, ``label``
    included, is kept as read.

    Raises:
        ConfigError: (exit 2) ``pairs`` or ``out`` not ``.csv``/``.parquet``/``.pq``; ``model`` neither a directory nor a
            registry version, of unknown kind, or without its model files.
        DataError: (exit 3) ``pairs`` missing, unreadable, with a repeated CSV column name, without
            ``title``/``keyphrase``, or with blank ones
            or text the model's tokenizer reads as unknown tokens only; an ONNX directory without
            ``export.json`` or tower files.
    """
    if Path(out).suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--out {out}: use a .csv or .parquet file name")
    df, clean_df = read_pairs(pairs)
    scorer = load_scorer(settings, model)
    tokenizer = getattr(scorer, "tokenizer", None)
    if tokenizer is None:  # a plugged-in scorer that does not say: the configured base encoder's
        from keyphrase_pipeline.labels.training_data import encoder_tokenizer

        tokenizer = encoder_tokenizer(settings)
    check_readable(clean_df, tokenizer, pairs)
    t0 = time.perf_counter()
    columns = scorer.score_columns(clean_df) if hasattr(scorer, "score_columns") else {"score": scorer.score(clean_df)}
    columns = {"score": columns["score"], **{k: v for k, v in columns.items() if k != "score"}}  # score first
    secs = time.perf_counter() - t0
    threshold = getattr(scorer, "threshold", None)
    written = ["score", *(["predicted_label"] if threshold is not None else []), *list(columns)[1:]]
    # an input scored before: its columns of a kp score output described that run's model, not this one's
    replaced = [c for c in written if c in df.columns]
    dropped = [c for c in OUTPUT_COLUMNS if c in df.columns and c not in written]
    if replaced or dropped:
        log.warning("--pairs %s was scored before: column(s) %s replaced by this run's (written last)%s", pairs,
                    replaced, f", {dropped} dropped (this model writes none: they would not describe its score)"
                    if dropped else "")
    result = df.drop(columns=replaced + dropped)
    result["score"] = [float(s) for s in columns["score"]]
    if threshold is not None:  # the model's own cut, chosen on its held-out pairs at training time
        # its own column: an input "label" (a judge's answer) is never overwritten
        result["predicted_label"] = (result["score"] >= threshold).astype("int8")
    else:
        log.warning("%s has no stored threshold (trained before thresholds were stored): "
                    "no predicted_label column", model)
    for name, values in list(columns.items())[1:]:  # what else the model shows per pair (a hybrid student: its cosine)
        result[name] = [float(v) for v in values]
    write_frame(result, out)
    stats = {"kind": scorer.kind, "rows": len(result), "out": str(Path(out).resolve()), "threshold": threshold,
             "columns": written, "replaced_input_columns": replaced, "dropped_input_columns": dropped,
             "pairs_per_s": round(len(result) / max(secs, 1e-9), 1)}
    log.info("scored %d pairs with a %s model -> %s", len(result), scorer.kind, out)
    return stats


def add_arguments(parser) -> None:
    """Add this stage's command-line options to ``parser`` (argparse)."""
    parser.add_argument("--model", required=True, help="model directory (cross, bi or ONNX) or registry version id")
    parser.add_argument("--pairs", required=True, help="CSV/parquet with title, category, keyphrase")
    parser.add_argument("--out", required=True,
                        help="output .csv or .parquet (input rows + score + predicted_label; + cosine for a hybrid student)")


def main(settings: Settings, args) -> int:
    """``kp score``: ``run`` with ``--model``, ``--pairs``, ``--out``; prints the stats (kind, rows, out, threshold,
    columns, pairs_per_s) as one JSON line and returns 0.

    Errors propagate as exceptions; ``keyphrase_pipeline.cli.main`` maps them to exit codes
    (ConfigError 2, DataError and SchemaError 3, GateError 4, anything else 1): see ``run``."""
    print(json.dumps(run(settings, args.model, args.pairs, args.out)))
    return 0
