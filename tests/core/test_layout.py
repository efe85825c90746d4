"""keyphrase_pipeline.core.layout: every lake path and marker named in one module, matching the layout existing lakes have on disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keyphrase_pipeline.core import layout
from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.lake import Lake
from keyphrase_pipeline.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def s(tmp_path):
    return Settings(lake_root=str(tmp_path))


def test_paths_are_the_on_disk_layout(s, tmp_path):
    root = str(tmp_path)
    assert layout.model_dir(s, "v1") == f"{root}/registry/students/v1/model"
    assert layout.model_dir(s, "c1", "cross") == f"{root}/registry/cross/c1/model"
    assert layout.registry_version_dir(s, "v1") == f"{root}/registry/students/v1"
    assert layout.onnx_dir(s, "v1") == f"{root}/registry/students/v1/onnx"
    assert layout.registry_pointer(s) == f"{root}/registry/CHAMPION"
    assert layout.registry_pointer(s, "cross") == f"{root}/registry/CROSS_LATEST"
    assert layout.champion_history_path(s) == f"{root}/registry/champion_history.jsonl"
    assert layout.embeddings_dir(s, "items", "v1") == f"{root}/embeddings/items/model=v1"
    assert layout.index_build_dir(s, "2026-10-05") == f"{root}/serving/builds/ds=2026-10-05"
    assert layout.serving_version_dir(s, "x") == f"{root}/serving/versions/x"
    assert layout.published_recommendations_dir(s, "x") == f"{root}/serving/versions/x/recommendations"
    assert layout.current_pointer(s) == f"{root}/serving/CURRENT"
    assert layout.pairs_dir(s, "2026-10-05", 3) == f"{root}/pairs/ds=2026-10-05/shard=00003"
    assert layout.pairs_manifest_path(s, "2026-10-05") == f"{root}/pairs/ds=2026-10-05/_MANIFEST.json"
    assert layout.done_marker(s, "2026-10-05", 0) == f"{root}/llm_labels/staging/ds=2026-10-05/shard=00000/_DONE"
    assert layout.staging_glob(s, "2026-10-05") == f"{root}/llm_labels/staging/ds=2026-10-05/shard=*/batch-*.parquet"
    assert layout.shard_lease_path(s, "2026-10-05", 2) == f"{root}/llm_labels/staging/ds=2026-10-05/shard=00002/_LEASE"
    assert layout.label_quarantine_dir(s, "2026-10-05", 2) == f"{root}/quarantine/llm_labels/ds=2026-10-05/shard=00002"
    assert layout.label_quarantine_glob(s, "2026-10-05") == \
        f"{root}/quarantine/llm_labels/ds=2026-10-05/shard=*/batch-*.parquet"
    assert layout.pair_keys_marker(s) == f"{root}/llm_labels/store/_PAIR_KEYS.json"
    assert layout.store_lease_path(s) == f"{root}/llm_labels/store/_LEASE"
    v = layout.registry_version_dir(s, "v1")
    assert [layout.version_file(v, n).rsplit("/", 1)[1] for n in layout.VERSION_FILES] == [
        "train_config.json", "data.json", "metrics.json", "promotion.json", "history.json", "curves.png",
        "calibration.png", "MODEL_CARD.md", "soft_labels.parquet"]
    assert layout.version_model_dir(v) == layout.model_dir(s, "v1")
    b = layout.serving_version_dir(s, "x")
    assert layout.bundle_tower_dir(b, "item") == f"{root}/serving/versions/x/onnx/item"
    assert layout.bundle_recommendations_file(b) == f"{root}/serving/versions/x/recommendations/part-00000.parquet"
    assert layout.part_file(layout.pairs_dir(s, "2026-10-05", 0)) == f"{root}/pairs/ds=2026-10-05/shard=00000/part-00000.parquet"
    assert layout.part_file_name(0) == layout.PART_FILE and layout.part_file_name(12) == "part-00012.parquet"
    assert layout.partition_stats_path(Lake(root).path("ctr_labels", ds="2026-10-05")) == \
        f"{root}/ctr_labels/ds=2026-10-05/_stats.json"
    assert layout.synth_world_meta_path(s) == f"{root}/synth/world.json"
    assert Lake(root).run_stats_path("2026-10-05", "publish") == f"{root}/runs/ds=2026-10-05/publish.json"
    with pytest.raises(ConfigError):
        layout.version_file(v, "weights")
    # a Lake works wherever settings do
    assert layout.staging_dir(Lake(root), "2026-10-05", 1) == layout.staging_dir(s, "2026-10-05", 1)


def test_names_round_trip_and_bad_input_is_refused(s):
    assert layout.batch_file_name(7) == "batch-00007.parquet"
    assert layout.batch_index("/x/shard=00001/" + layout.batch_file_name(123)) == 123
    with pytest.raises(ConfigError):
        layout.registry_version_dir(s, "../evil")
    with pytest.raises(ConfigError):
        layout.model_dir(s, "v1", "teachers")
    with pytest.raises(ConfigError):
        layout.embeddings_dir(s, "users", "v1")
    with pytest.raises(ConfigError, match="local or mounted"):
        layout.registry_root(Settings(lake_root="s3a://bucket/lake"))


# Names of places in the lake; only keyphrase_pipeline/core/lake.py (dataset roots) and keyphrase_pipeline/core/layout.py may spell them.
LAKE_NAMES = ("CURRENT", "CHAMPION", "CROSS_LATEST", "champion_history.jsonl", layout.PAIRS_MANIFEST, layout.SHARD_DONE,
              layout.SHARD_LEASE, layout.PAIR_KEYS_MARKER,
              layout.SUCCESS, layout.SERVING_MANIFEST, layout.INDEX_META, layout.INDEX_FILE, layout.INDEX_IDMAP,
              layout.EXPORT_RECORD, layout.MODEL_MARKER, layout.PART_FILE, layout.PARTITION_STATS,
              layout.SYNTH_WORLD_META, *layout.VERSION_FILES.values())
# Folders of the lake (``keyphrase_pipeline/core/layout.py``): never joined by hand either.
LAKE_DIRS = ("registry", "students", "serving", "versions", "builds", "embeddings", "llm_labels", "staging",
             "quarantine")
LAKE_LITERALS = re.compile(
    r"""(["']|\}/)(%s)["']""" % "|".join(map(re.escape, LAKE_NAMES))  # a file or marker name: quoted, f"{d}/name"
    + r"""|batch-\{|shard=\{|/model=\{|/ds=\{|[(,]\s*f["']ds=\{\w+\}["']"""  # formatted partition names
    + r"""|/\s*["'](model|onnx|recommendations)["']"""               # Path(v) / "model"
    + r"""|(\.path|Path)\([^)]*,\s*["'](model|onnx|recommendations)["']"""  # lake.path(..., "recommendations")
    + r"""|\}/(model|onnx|recommendations)["'/]"""                 # f"{v}/model"
    + r"""|["']/(%s)["']""" % "|".join(map(re.escape, LAKE_NAMES))  # root + "/_DONE"
    + r"""|\}/(%s)\b""" % "|".join(LAKE_DIRS)                         # f"{root}/registry/CHAMPION"
    + r"""|(join|Path|joinpath)\([^)]*["'](%s)["']""" % "|".join(LAKE_DIRS + ("model", "onnx", "recommendations")))


@pytest.mark.parametrize("line", [
    'p = Path(vdir) / "metrics.json"', 'Path(tmp, "train_config.json")', 'str(Path(tmp) / "MODEL_CARD.md")',
    'soft = d.parent / "soft_labels.parquet"', 'm = str(Path(p) / "model")', 'lake.path("serving", "versions", v, "recommendations")',
    'root / "onnx" / "item"', 'f"{tmp}/_stats.json"', 'lake.path("runs", f"ds={ds}")', 'lake.path("synth", "world.json")',
    'f"{p}/part-00000.parquet"', 'f"{root}/{v}/model"', 'f"{root}/registry/CHAMPION"',
    'os.path.join(root, "registry", "students", v, "model")', 'root + "/_DONE"', 'Path(root, "registry", "students")',
    'Path(root).joinpath("model")', 'f"{root}/serving/versions"', 'f"{root}/embeddings/items"'])
def test_the_check_sees_a_hand_built_path(line):
    assert LAKE_LITERALS.search(line)


@pytest.mark.parametrize("line", [
    'raise DataError(f"ds={ds} has no shard {shard}")', '{"cross": CrossScorer, "onnx": OnnxScorer}',
    '"counts": {"recommendations": int(len(recs))}', 'lake.path("recommendations", ds=ds)', 'kind = "onnx"',
    'Path(model_dir) / "config.json"', 'out / "report.json"', 'check_pandas(out, "recommendations", where="x")',
    'getattr(loss, "model", None)', '@app.get("/api/plots/curves.png")', 'Output ``registry/students/<v>/onnx/``::'])
def test_the_check_leaves_other_strings_alone(line):
    assert not LAKE_LITERALS.search(line)


def test_no_module_formats_a_lake_path_by_hand():
    offenders, seen = [], 0
    for package in ("keyphrase_pipeline", "plugins", "dags"):
        for f in sorted((REPO / package).rglob("*.py")):
            seen += 1
            if f.relative_to(REPO).as_posix() in ("keyphrase_pipeline/core/lake.py", "keyphrase_pipeline/core/layout.py"):
                continue
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if LAKE_LITERALS.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    assert seen > 50, f"only {seen} modules found: did the packages move?"
    assert not offenders, "lake paths built outside keyphrase_pipeline/core/layout.py:\n" + "\n".join(offenders)
