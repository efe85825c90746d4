"""The published version: which one is live, its manifest, and a small reader of it (used by the web UI).

Where the registry, the index builds and the published bundles lie: the tree in ``keyphrase_pipeline/core/layout.py``'s docstring
(every path is built there). The functions here take the settings or a ``keyphrase_pipeline.core.lake.Lake``.

``load_current(settings).search("apple iphone 13 [SEP] phones", k=10)`` embeds the text with the
published item tower and searches the published index; ``search(item_id)`` returns the published
recommendations of that item, reading one row group of the bundle (``keyphrase_pipeline.artifacts.item_lookup``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from keyphrase_pipeline.artifacts import item_lookup
from keyphrase_pipeline.artifacts.registry import champion, champion_or_none
from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import DataError
from keyphrase_pipeline.core.lake import Lake, local_path
from keyphrase_pipeline.models.ann import set_search_params
from keyphrase_pipeline.models.lexical_match import HybridScore
from keyphrase_pipeline.models.onnx_export import sha256_file
from keyphrase_pipeline.models.onnx_tower import get_tower
from keyphrase_pipeline.models.text import SEP, clean, unreadable_mask
from keyphrase_pipeline.models.topk import KeyphraseTable, rescore_top, search_batch

if TYPE_CHECKING:
    from keyphrase_pipeline.core.settings import Settings

log = logging.getLogger(__name__)

TOWERS = ("item", "keyphrase")


# ---- the published version (paths: keyphrase_pipeline.core.layout) ------------------------------------------------------
def require_version(settings: Settings, version: str | None = None) -> str:
    """``version`` or the champion; DataError (exit 3) when there is none or its model is missing.

    ConfigError (exit 2) when the lake is not local (registry) or ``version`` is not a valid id."""

    lake = Lake.from_settings(settings)
    v = version or champion(settings)
    if not v:
        raise DataError(f"no model: registry/CHAMPION is not set under {lake.root} (train and promote a student first)")
    if not lake.exists(layout.model_dir(settings, v)):
        raise DataError(f"missing model: {layout.model_dir(settings, v)} does not exist")
    return v


def pin_serving_model(settings: Settings, ds: str, version: str) -> None:
    """Pin ``version`` as the student whose towers day ``ds`` serves (``runs/ds=D/_serving_model``; ``kp export``
    writes it at the start of the serving chain)."""
    layout.lake_of(settings).write_pointer(layout.serving_model_pin(settings, ds), version)


def serving_model(settings: Settings, ds: str | None, version: str | None = None) -> str:
    """The student version a serving stage of day ``ds`` uses: ``version`` when given; else the one ``kp export``
    pinned for ``ds``; else the champion. So a ``kp promote`` between export and publish applies to the next run
    (logged here) instead of failing this one with towers that were never exported.

    Raises what ``require_version`` raises (DataError exit 3: no champion, or the model missing)."""
    if version or not ds:
        return require_version(settings, version)
    pinned = layout.lake_of(settings).read_pointer(layout.serving_model_pin(settings, ds))
    if pinned is None:
        return require_version(settings)
    if not layout.lake_of(settings).exists(layout.model_dir(settings, pinned)):
        raise DataError(f"day {ds} serves {pinned}, pinned by its `kp export` ({layout.serving_model_pin(settings, ds)}), "
                        f"but {layout.model_dir(settings, pinned)} does not exist: clear the day's serve.export task "
                        f"(or run `kp export --ds {ds}`) to pin the current champion")

    now = champion_or_none(settings)
    if now and now != pinned:
        log.warning("the champion is now %s, but day %s serves %s, pinned when its towers were exported: the new "
                    "champion serves from the next run (or clear this run's export task to serve it now)", now, ds,
                    pinned)
    return require_version(settings, pinned)


def current_version(settings: Settings) -> str | None:
    """The live published version id, or None before the first publish."""
    return layout.lake_of(settings).read_pointer(layout.current_pointer(settings))


def current_recommendations_path(settings: Settings) -> str | None:
    """``serving/versions/<CURRENT>/recommendations`` (contract ``recommendations``), or None before any publish."""
    v = current_version(settings)
    return layout.published_recommendations_dir(settings, v) if v else None


def published_recommendations_path(settings: Settings, version_id: str) -> str:
    """``serving/versions/<id>/recommendations`` (contract ``recommendations``): what ``kp publish`` wrote."""
    return layout.published_recommendations_dir(settings, version_id)


def version_before(settings: Settings, ds: str) -> str | None:
    """The published version whose recommendations feed day ``ds``: CURRENT when it was built for an
    earlier day, else the newest version built before ``ds`` (None when none is). A version published by
    ``ds``'s own run never feeds ``ds`` again, so a rerun of the day selects what its first run selected."""
    current = current_version(settings)
    if not current:
        return None
    before = []
    for name in published_versions(settings):  # complete versions only (with a manifest)
        manifest = read_manifest(settings, name)
        if str(manifest.get("ds", "")) < ds:
            if name == current:
                return current
            before.append((manifest.get("created_at", ""), name))
    return max(before)[1] if before else None


def read_manifest(settings: Settings, version_id: str) -> dict:
    """The ``manifest.json`` of a published version (version, ds, model_version, dim, top_k, checksums, ...).

    Raises DataError (exit 3) when it is missing, ConfigError (exit 2) on a non-local lake,
    json.JSONDecodeError (exit 1) when it is not JSON."""
    path = Path(local_path(layout.serving_version_dir(settings, version_id))) / layout.SERVING_MANIFEST
    if not path.exists():
        raise DataError(f"published version {version_id!r} has no manifest at {path}")
    return json.loads(path.read_text())


def published_versions(settings: Settings) -> list[str]:
    """Complete published versions (hidden temp dirs excluded), oldest first by the manifest's ``created_at``.

    ConfigError (exit 2) on a non-local lake; json.JSONDecodeError (exit 1) when a manifest is not JSON."""
    root = Path(local_path(layout.serving_versions_root(settings)))
    if not root.exists():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(("_", ".")) and (p / layout.SERVING_MANIFEST).exists()]
    return [p.name for p in sorted(found, key=lambda p: json.loads((p / layout.SERVING_MANIFEST).read_text()).get("created_at", ""))]


def bad_versions(settings: Settings) -> dict[str, dict]:
    """The published versions marked bad (rolled back from): ``{version: {marked_at, reason, ds, model_version}}``;
    {} when none is. Raises DataError (exit 3) naming the file when it is not a JSON object of objects (a damaged
    or hand-edited file): a rollback or a prune must not guess which versions are bad."""
    path = layout.bad_versions_path(settings)
    try:
        marks = layout.lake_of(settings).read_json(path, default={}) or {}
    except ValueError as exc:
        raise DataError(f"{path} is damaged ({exc}): repair it (a JSON object version -> {{reason, marked_at}}) or "
                        "delete it (the bad marks are then forgotten)") from None
    if not isinstance(marks, dict) or not all(isinstance(v, dict) for v in marks.values()):
        raise DataError(f"{path} is not a JSON object of version -> {{reason, marked_at}}: repair or delete it")
    return marks


def mark_bad(settings: Settings, version: str, reason: str) -> dict:
    """Mark published ``version`` bad (``serving/BAD_VERSIONS.json``, rewritten atomically) with ``reason``; return
    its record. A bad version is never a rollback target (``rollback_target``) and is pruned first (``publish.prune``).
    The record keeps the version's day and model, so the mark outlives the bundle."""
    try:
        manifest = read_manifest(settings, version)
    except DataError:
        manifest = {}
    marks = bad_versions(settings)

    marks[version] = {"marked_at": dt.datetime.now(dt.UTC).isoformat(), "reason": reason,
                      "ds": manifest.get("ds"), "model_version": manifest.get("model_version")}
    layout.lake_of(settings).write_json(layout.bad_versions_path(settings), marks)
    log.warning("serving version %s marked bad: %s", version, reason)
    return marks[version]


def unmark_bad(settings: Settings, version: str) -> bool:
    """Remove ``version``'s bad mark; return whether it had one."""
    marks = bad_versions(settings)
    if version not in marks:
        return False
    del marks[version]
    layout.lake_of(settings).write_json(layout.bad_versions_path(settings), marks)
    log.warning("serving version %s: bad mark removed", version)
    return True


def version_order(manifest: dict) -> tuple[str, str]:
    """A published version's place in time: (its day, its publish time), from its manifest (ISO strings sort)."""
    return str(manifest.get("ds", "")), str(manifest.get("created_at", ""))


def rollback_target(settings: Settings, current: str | None = None) -> str | None:
    """The version ``kp rollback`` returns to from ``current`` (default: CURRENT), or None when there is none.

    The version that was current before ``current`` (its manifest's ``previous``) when it is kept and not bad;
    else the newest kept, not-bad version before ``current`` in (day, publish time) order, preferring one that was
    live once (some manifest's ``previous``) to a backfill that never was; a version rolled back from never
    qualifies."""
    current = current if current is not None else current_version(settings)
    versions = published_versions(settings)
    if current is None:
        return None
    bad = bad_versions(settings)
    manifests = {v: read_manifest(settings, v) for v in versions}
    cur_manifest = manifests.get(current, {})
    prev = cur_manifest.get("previous")
    if prev in manifests and prev not in bad and prev != current:
        return prev
    if current not in manifests:  # CURRENT's bundle is gone: the newest good one
        older = [v for v in versions if v not in bad]
    else:
        older = [v for v in versions if v != current and v not in bad and version_order(manifests[v]) < version_order(cur_manifest)]
    served = {m.get("previous") for m in manifests.values()}  # was live once (a later publish replaced it)
    return max(older, key=lambda v: (v in served, version_order(manifests[v]))) if older else None


def verify_files(root: Path, checksums: dict[str, str]) -> None:
    """Raise DataError naming the first file missing or whose sha256 differs from the manifest."""

    for rel, want in sorted(checksums.items()):
        f = root / rel
        if not f.exists():
            raise DataError(f"corrupted bundle {root}: {rel} is missing")
        got = sha256_file(f)
        if got != want:
            raise DataError(f"corrupted bundle {root}: checksum of {rel} is {got[:12]}…, manifest says {want[:12]}…")


# ---- reader --------------------------------------------------------------------------------------
def _expected(row) -> dict:
    """``expected_ctr`` and ``rerank_score`` (floats, None when absent or NaN), ``ctr_model_version`` and
    ``rerank_cross_version`` (str or None) of a published row (namedtuple)."""
    import math

    def number(name):
        value = getattr(row, name, None)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    return {"expected_ctr": number("expected_ctr"), "ctr_model_version": getattr(row, "ctr_model_version", None) or None,
            "rerank_score": number("rerank_score"),
            "rerank_cross_version": getattr(row, "rerank_cross_version", None) or None}


def _hybrid_of(manifest: dict) -> tuple:
    """(``HybridScore`` or None, depth) of a manifest's ``hybrid`` (``kp publish``; None: the lists are in cosine
    order). One this code cannot read is logged and ignored, so the version's published lists and lookups by item
    id still serve; only its live text search is then in cosine order."""
    record = manifest.get("hybrid") or {}
    try:
        hybrid = HybridScore.from_dict(record.get("score")) if isinstance(record, dict) and record.get("depth") else None
        return (hybrid, int(record["depth"])) if hybrid else (None, 0)
    except (ValueError, TypeError) as exc:
        log.warning("published version %s: its hybrid score cannot be read (%s): its live text search is in cosine "
                    "order", manifest.get("version"), exc)
        return None, 0


class ServingBundle:
    """A loaded published version: FAISS index + keyphrase id map + ONNX item tower + recommendations.

    Raises DataError (exit 3) when ``verify`` finds a file missing or with another sha256 than the manifest,
    or when the index's dimension differs from the manifest's ``dim``; KeyError for a manifest without
    ``version``/``checksums``/``dim``; faiss RuntimeError for an unreadable index. The item tower loads on first use;
    the recommendations are never loaded whole: each item id is looked up (``recommendations_of``)."""

    def __init__(self, root: Path, manifest: dict, verify: bool = True, device: str = "auto"):
        import faiss
        import pandas as pd

        self.root = root
        self.manifest = manifest
        self.version = manifest["version"]
        if verify:
            verify_files(root, manifest["checksums"])
        self.index = faiss.read_index(str(root / layout.INDEX_FILE))
        if self.index.d != manifest["dim"]:
            raise DataError(f"bundle {self.version}: index dim {self.index.d} != manifest dim {manifest['dim']}")
        idmap = pd.read_parquet(root / layout.INDEX_IDMAP)
        self.keyphrases = dict(zip(idmap["keyphrase_id"].astype("int64"), idmap["keyphrase"]))

        set_search_params(self.index, manifest.get("index", {}).get("search_params", {}))
        self._tower_dir = Path(layout.bundle_tower_dir(root, "item"))
        self._tower_file = manifest.get("item_model_file", "model.onnx")
        self._device = device
        self._legacy = None  # a pre-layout bundle's recommendations, by item (recommendations_of), or its read error
        self._legacy_columns: list[str] = []
        self._table = None  # recommend.KeyphraseTable of the id map, built on the first text search
        self.hybrid, self.hybrid_depth = _hybrid_of(manifest)

    @property
    def tower(self):

        return get_tower(self._tower_dir, self._tower_file, device=self._device)

    def recommendations_of(self, item_id: int, stats: dict | None = None):
        """The published rows of ``item_id`` (pandas, by rank; empty when the bundle has none): one bucket file's
        footer and the row group(s) holding the id (``item_lookup.lookup``). ``stats`` gets ``bytes_read``,
        ``files_opened`` and ``row_groups_read``.

        A bundle published before that layout (no ``recommendations_layout`` in its manifest: a rollback target
        kept from an older release) is read whole once and grouped by item in memory, as readers did then, with a
        warning: scanning it on every lookup would read the whole bundle per request. Publishing the day again
        lays it out."""
        recs_dir = layout.bundle_recommendations_dir(self.root)
        if self.manifest.get("recommendations_layout"):
            return item_lookup.lookup(recs_dir, self.manifest["recommendations_layout"], int(item_id),
                                      stats=stats).to_pandas()
        read = 0
        if self._legacy is None:
            from keyphrase_pipeline.core.lake import parquet_dataset

            log.warning("published version %s predates the item-bucket layout: its recommendations are loaded whole "
                        "(memory grows with its items); `kp publish` the day again to lay it out", self.version)
            try:  # in the contract's types, whatever widths its files were written with
                dataset = parquet_dataset(recs_dir, contract="recommendations")
                recs = dataset.to_table().to_pandas()
            except Exception as exc:  # noqa: BLE001 - cached, so a broken bundle is not re-read per request
                self._legacy = exc
            else:
                read = sum(Path(f).stat().st_size for f in dataset.files)
                self._legacy = {iid: g.sort_values("rank") for iid, g in recs.groupby("item_id")}
                self._legacy_columns = list(recs.columns)
        if isinstance(self._legacy, Exception):
            raise DataError(f"published version {self.version}: its recommendations cannot be read "
                            f"({type(self._legacy).__name__}: {self._legacy}); roll back with `kp rollback`") from None
        if stats is not None:
            stats.update({"bytes_read": read, "files_opened": 0, "row_groups_read": 0, "legacy_in_memory": True})
        g = self._legacy.get(int(item_id))
        if g is not None:
            return g
        import pandas as pd

        return pd.DataFrame(columns=self._legacy_columns)

    def search(self, query, k: int | None = None) -> list[dict]:
        """Top keyphrases for an item: ``query`` is item text (title [SEP] category) or an item id.

        Returns up to ``k`` (default: the bundle's ``top_k``; 0 also means the default) dicts ``{rank,
        keyphrase_id, keyphrase, score}`` (an item id's published rows also ``expected_ctr`` and ``rerank_score``,
        float or None, ``ctr_model_version`` and ``rerank_cross_version``), best first, at most one per normalised
        keyphrase text (the search and
        the rule of ``recommend.search_batch``, without its threshold); ``score`` is the cosine in [-1, 1] at the bundle's dim,
        or, when the bundle's lists were re-scored with the student's hybrid score (manifest ``hybrid``), that score
        (not bounded to [-1, 1]) on the top max(``k``, its depth) candidates, re-ordered by it, the query text
        standing for the item's title and category (split at ``[SEP]``); unlike ``kp recommend`` the search has no
        ``serve.score_threshold``, so a candidate below it may be lifted into the list. An
        unknown item id gives an empty list; text is normalised by ``keyphrase_pipeline.models.text.clean``;
        blank text, or text whose tokens are all unknown to the tower (emoji only), raises DataError (exit 3). Only a Python ``int`` is an
        item id: a numpy integer is searched as text (pass ``int(i)``)."""
        k = int(k or self.manifest.get("top_k", 20))
        if isinstance(query, (int,)) and not isinstance(query, bool):
            g = self.recommendations_of(int(query))
            return [{"rank": int(r.rank), "keyphrase_id": int(r.keyphrase_id), "keyphrase": r.keyphrase,
                     "score": float(r.score), **_expected(r)} for r in g.head(k).itertuples()]

        text = clean(query)  # the rule the catalog went through (docs/DATA.md, "Text normalisation")
        if not text:
            raise DataError("empty query (nothing left after removing whitespace and invisible characters)")
        tower = self.tower
        if unreadable_mask([text], tower.tokenizer)[0]:
            raise DataError(f"unreadable query {text!r}: every token is unknown to the model (e.g. emoji only)")
        vec = tower.embed([text])

        if self._table is None:
            import pandas as pd

            self._table = KeyphraseTable(pd.Series(self.keyphrases, dtype=object))
        depth = max(k, self.hybrid_depth) if self.hybrid is not None else k
        found = search_batch(self.index, self._table, [0], vec, depth, threshold=-2.0)  # every cosine is above -2
        if self.hybrid is not None:  # as kp recommend re-scored the published lists (artifacts.hybrid_rescore)
            title, _, category = text.partition(SEP.strip())  # item_text's "title [SEP] category": "[SEP]" no word
            n = len(found)
            found = rescore_top(found, self.hybrid.score(found["score"].to_numpy(), [title] * n, [category] * n,
                                                         found["keyphrase"].tolist()), depth)
        found = found[found["rank"] <= k]
        return [{"rank": int(r.rank), "keyphrase_id": int(r.keyphrase_id), "keyphrase": r.keyphrase,
                 "score": float(r.score)} for r in found.itertuples()]


_BUNDLES: dict[tuple[str, str], ServingBundle] = {}
_BLOCK = threading.Lock()


def load_version(settings: Settings, version_id: str, verify: bool = True) -> ServingBundle:
    """The published version ``version_id`` as a ``ServingBundle`` (checksums verified unless ``verify`` is False).

    Raises DataError (exit 3) when the version or its manifest is missing, and what ``ServingBundle`` raises."""
    root = Path(local_path(layout.serving_version_dir(settings, version_id)))
    if not root.exists():
        raise DataError(f"published version {version_id!r} not found at {root}")
    return ServingBundle(root, read_manifest(settings, version_id), verify=verify, device=settings.serve.device)


def load_current(settings: Settings, verify: bool = True, cached: bool = True) -> ServingBundle:
    """The live bundle (checksums verified on first load; cached per version in this process).

    Raises DataError (exit 3): nothing published, the live version missing or corrupted, or ``serving/CURRENT``
    changing during three attempts."""
    for _attempt in range(3):
        version = current_version(settings)
        if not version:
            raise DataError("nothing is published yet (serving/CURRENT is not set): run `kp publish`")
        key = (str(Lake.from_settings(settings).root), version)
        with _BLOCK:
            if cached and key in _BUNDLES:
                return _BUNDLES[key]
        try:
            bundle = load_version(settings, version, verify=verify)
        except DataError:
            if current_version(settings) != version:  # switched (and pruned) while we read: try again
                continue
            raise
        if cached:
            with _BLOCK:
                _BUNDLES[key] = bundle
        return bundle
    raise DataError("serving/CURRENT kept changing while loading; try again")
