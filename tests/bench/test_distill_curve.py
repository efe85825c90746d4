"""bench/distill_curve.py: docs/TRAINING.md's distillation tables are what the committed sweep files generate,
and every sweep file of a world is that world's split with one shared teacher and the settings its row names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testsupport import load_bench

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curve():
    return load_bench("distill_curve", "distill_curve", register=True)


@pytest.mark.parametrize("world,marker", [("attr", "distill sweep table"), ("listing", "distill sweep table: listing"),
                                          ("open", "distill sweep table: open")])
def test_the_docs_tables_are_generated_from_the_committed_sweep(curve, world, marker):
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    table = curve.sweep_table(world)
    start, end = f"<!-- {marker} -->\n", f"\n<!-- /{marker} -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == table
    assert table.count("\n") >= 2 + 1 + 2  # header, zero-shot, teacher and every run


def _files(curve, world):
    d = REPO / "bench" / "results" / "distill_sweep"
    return {stem: json.loads((d / f"{stem}.json").read_text()) for stem, _ in curve.SWEEPS[world]
            if (d / f"{stem}.json").exists()}


@pytest.mark.parametrize("world", ["attr", "listing", "open"])
def test_sweep_files_share_a_split_and_a_teacher(curve, world):
    files = _files(curve, world)
    assert len(files) >= 3
    first = next(iter(files.values()))
    for stem, r in files.items():
        assert r["world"] == world and r["simulated"] is True and r["split"] == first["split"], stem
        cross = r["per_seed"][0]["metrics"]["cross"]
        assert cross["auc"] == first["per_seed"][0]["metrics"]["cross"]["auc"], stem  # one shared teacher
        assert "truth" in r["per_seed"][0]["metrics"]["student"], stem


def test_sweep_files_carry_the_settings_their_rows_name(curve):
    files = _files(curve, "attr")
    assert files["attr_1_pointwise_1x"]["config"]["kd_list_ratio"] == 0.0
    assert files["attr_2_lists_5x"]["config"]["kd_list_ratio"] == 4.0
    assert files["attr_3_lists_5x_pearson"]["config"]["kd_list_pearson"] == 1.0
    if "attr_4_lists_20x" in files:
        assert files["attr_4_lists_20x"]["config"]["kd_list_ratio"] == 19.0
    def student_epochs(r):  # the student's plan as its run logged it ("2 epoch(s) x 277 steps ...")
        return r["per_seed"][0]["student_budget"].split(" epoch")[0]

    assert student_epochs(files["attr_5_lists_5x_epochs15"]) == "1.5"
    listing = _files(curve, "listing")
    assert listing["listing_1_epochs4_len48"]["config"]["max_seq_length"] == 48
    assert student_epochs(listing["listing_1_epochs4_len48"]) == "4"
    assert listing["listing_2_epochs2"]["config"]["max_seq_length"] == 64
    assert student_epochs(listing["listing_2_epochs2"]) == "2"
    assert student_epochs(listing["listing_3_epochs2_serve4"]) == "2"
    assert listing["listing_3_epochs2_serve4"]["config"]["matryoshka_serve_weight"] == 4.0


def test_listing_seed_runs_are_the_defaults_on_the_same_split():
    """docs/TRAINING.md's 3-seed listing figures: seed 1 is listing_2_epochs2, seeds 2-3 listing_defaults_seeds23,
    both with the defaults they claim, on one split."""
    d = REPO / "bench" / "results" / "distill_sweep"
    one = json.loads((d / "listing_2_epochs2.json").read_text())
    more = json.loads((d / "listing_defaults_seeds23.json").read_text())
    assert more["world"] == "listing" and more["seeds"] == [2, 3] and more["split"] == one["split"]
    c = more["config"]
    assert (c["max_seq_length"], c["kd_list_ratio"], c["matryoshka_serve_weight"], c["bi_epochs"]) == (64, 4.0, 1.0, 2.0)
    assert all(ps["cross_seconds"] > 0 for ps in more["per_seed"])  # a teacher trained per seed
    assert all(ps["student_budget"].startswith("2 epoch") for ps in more["per_seed"] + one["per_seed"])


def test_open_sweep_files_carry_the_settings_their_rows_name(curve):
    files = _files(curve, "open")
    base = files["open_1_defaults"]["config"]
    assert (base["learning_rate"], base["label_mix"], base["kd_query_share"], base["kd_list_ratio"]) == (5e-5, "llm+ctr+kd", 0.0, 4.0)
    assert files["open_2_freeze_embeddings"]["config"]["freeze_token_embeddings"] is True
    assert files["open_3_lr2e5"]["config"]["learning_rate"] == 2e-5
    assert files["open_4_kd_only"]["config"]["label_mix"] == "kd"
    assert files["open_5_query05"]["config"]["kd_query_share"] == 0.5
    assert files["open_6_swap05"]["config"]["kd_swap_share"] == 0.5
    assert files["open_7_last"]["config"]["bi_checkpoint"] == "last"
    for stem, r in files.items():   # every lever run reused seed 1's teacher; the noise row is a seed-2 student
        assert r["seeds"] == ([2] if stem == "open_noise_s2_t1" else [1]), stem
        assert stem == "open_1_defaults" or r["per_seed"][0]["cross_seconds"] == 0.0, stem
    if "open_noise_s2_t1" in files:
        c = files["open_noise_s2_t1"]["config"]
        assert (c["learning_rate"], c["label_mix"], c["kd_swap_share"]) == (5e-5, "llm+ctr+kd", 0.0)


def test_open_vs_real_and_checkpoint_tables_are_generated_from_the_committed_runs(curve):
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    for marker, table in (("open vs real table", curve.open_vs_real_table()), ("checkpoint table", curve.checkpoint_table())):
        start, end = f"<!-- {marker} -->\n", f"\n<!-- /{marker} -->"
        assert doc[doc.index(start) + len(start):doc.index(end)] == table, marker
    d = REPO / "bench" / "results" / "distill_sweep"
    varies, newer = {"bi_checkpoint", "bi_epochs", "cross_reused"}, {"bi_checkpoint": "best", "kd_swap_share": 0.0}
    for world, stems in curve.CHECKPOINT_RUNS.items():
        runs = {stem: json.loads((d / f"{stem}.json").read_text()) for stem in stems}   # every file is committed
        assert len({json.dumps(r["split"], sort_keys=True) for r in runs.values()}) == 1, world   # one split per world
        configs = {stem: r["config"] for stem, r in runs.items()}
        common = set.intersection(*(set(c) for c in configs.values()))
        same = {k: configs[stems[0]][k] for k in common - varies}
        for stem, c in configs.items():   # the files differ in the checkpoint kept and the student's epochs only
            assert runs[stem]["world"] == world and {k: c[k] for k in common - varies} == same, stem
            assert all(k in newer and (k in varies or c[k] == newer[k]) for k in set(c) - common), stem
        teachers: dict = {}
        for r in runs.values():   # and a seed's students share its teacher
            for ps in r["per_seed"]:
                teachers.setdefault(ps["seed"], set()).add(ps["metrics"]["cross"]["auc"])
        assert all(len(v) == 1 for v in teachers.values()), world
        assert all(("last", 1.0) in r and ("last", 2.0) in r for r in curve.checkpoint_runs(world).values()), world
    open_runs = curve.checkpoint_runs("open")
    assert sorted(open_runs) == [1, 2, 3] and all(("best", 2.0) in r for r in open_runs.values())
    with pytest.raises(FileNotFoundError):
        curve.open_vs_real_table(REPO / "bench")
    with pytest.raises(FileNotFoundError):
        curve.checkpoint_table(REPO / "bench")


def test_the_time_at_the_real_sets_size_in_the_doc_is_the_committed_runs():
    """docs/TRAINING.md's minutes and steps of the 14,000-pair run are those of its result file."""
    r = json.loads((REPO / "bench" / "results" / "distill_sweep" / "open_14000_s1.json").read_text())
    ps, c = r["per_seed"][0], r["config"]
    assert (c["bi_checkpoint"], c["bi_epochs"], r["split"]["a_pairs"]) == ("last", 1.0, 7080)
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    section = doc[doc.index("### The recipe's time at the real set's size"):doc.index("## Evaluation (")]
    cross, bi = ps["cross_seconds"] / 60, ps["student_seconds"] / 60
    assert f"stopped early at step {ps['cross_steps']} (best {ps['cross_best_step']}) | {cross:.1f} |" in section
    assert f"1 epoch: {ps['student_steps']:,} steps" in section and f"all run, the last kept | {bi:.1f} |" in section
    assert f"| both | | **{cross + bi:.1f}** |" in section
    assert f"in {ps['student_distillation']['teacher_seconds']:.0f} s" in section


def _config_changes(run: dict, recipe: dict) -> set[str]:
    """The settings (keys of two result files' ``config``) whose values differ between ``run`` and ``recipe``."""
    a, b = run["config"], recipe["config"]
    return {k for k in a | b if a.get(k) != b.get(k)}


def test_the_students_ceiling_in_the_doc_is_the_committed_runs():
    """docs/TRAINING.md's ceiling table (bench/student_ceiling.py) is its result files, one row a file, each with its
    seed's teacher; beside them, for each of those seeds, the recipe's row (the 1-epoch defaults) and the rows of the
    recipe's data with the ceiling's loss (teacher scores only), whose settings are the recipe's but ``label_mix``;
    and the recipe with a larger start model (all-mpnet-base-v2), whose settings are the recipe's but that one."""
    sweep = REPO / "bench" / "results" / "distill_sweep"
    files = sorted(sweep.glob("open_ceiling_*.json"))
    assert files
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    section = doc[doc.index("### The student's ceiling on the open world"):doc.index("### The recipe's time at")]
    recipe = json.loads((sweep / "open_last_e1.json").read_text())
    by_seed = {p["seed"]: p for p in recipe["per_seed"]}

    def row(name: str, seed: int, steps: int, full: float, served: float) -> str:
        teacher = by_seed[seed]["metrics"]["cross"]["auc"]
        return f"| {name} | {seed} | {teacher:.3f} | {steps} | {full:.3f} | {served:.3f} | {teacher - served:.3f} |"

    ceilings = {f.stem: json.loads(f.read_text()) for f in files}
    seeds = set()
    for f in files:
        r = ceilings[f.stem]
        auc, seed = r["auc"], r["seed"]
        seeds.add(seed)
        assert (r["cross"], r["label_mix"]) == (recipe["config"]["cross_reused"].format(seed=seed), "kd"), f
        assert round(auc["cross"], 4) == round(by_seed[seed]["metrics"]["cross"]["auc"], 4), f
        epochs = f"{r['bi_epochs']:g} epoch{'s' if r['bi_epochs'] != 1 else ''}"
        want = row(f"the ceiling, {epochs}: half B's own pairs, teacher scores only", seed, r["student_steps"],
                   auc["student_full"], auc["student"])
        assert want in section, want
    assert section.count("| the ceiling, ") == len(files)
    e1, e3, e6 = (ceilings[f"open_ceiling_e{e}_s2"] for e in (1, 3, 6))  # the prose's figures (the committed script)
    prose = " ".join(section.split())
    assert (f"teacher's logits on B rises from {e3['pearson_student_vs_teacher_logit']:.3f} to "
            f"{e6['pearson_student_vs_teacher_logit']:.3f}") in prose
    assert "{:.1f}, {:.1f} and {:.1f} minutes of `train-bi`".format(*(r["student_seconds"] / 60 for r in (e1, e3, e6))) in prose
    assert all(r["cut_rotation"]["applied"] is False for stem, r in ceilings.items() if stem.endswith("_s2"))
    runs = [("the recipe (defaults): half A's judged pairs and teacher-scored pairs from A's texts", by_seed[s])
            for s in sorted(seeds)]
    for f in sorted(sweep.glob("open_kd_only_last_e1_s*.json")):
        kd = json.loads(f.read_text())
        assert _config_changes(kd, recipe) == {"label_mix"} and kd["split"] == recipe["split"]
        assert kd["config"]["label_mix"] == "kd"
        runs += [("the same loss on the recipe's data (`label_mix=kd`): half A's pairs, teacher scores only", p)
                 for p in kd["per_seed"]]
    larger_files = sorted(sweep.glob("open_mpnet_student_e1_s*.json"))  # the recipe, another start model
    assert len(larger_files) == 2
    for f in larger_files:
        larger = json.loads(f.read_text())
        assert _config_changes(larger, recipe) == {"base_model", "max_train_minutes"}
        assert "all-mpnet-base-v2" in larger["config"]["base_model"]
        assert larger["split"] == recipe["split"]
        runs += [("the recipe with a larger student: all-mpnet-base-v2 (110M parameters, 768-d) as `train.base_model`, "
                  "the same teacher", p) for p in larger["per_seed"]]
    for name, run in runs:
        m = run["metrics"]
        assert round(m["cross"]["auc"], 4) == round(by_seed[run["seed"]]["metrics"]["cross"]["auc"], 4)
        want = row(name, run["seed"], run["student_steps"], m["student_full"]["auc"], m["student"]["auc"])
        assert want in section, want


def test_the_ceiling_on_the_other_worlds_in_the_doc_is_the_committed_runs():
    """docs/TRAINING.md's ceiling table for alt, attr and listing is one row per ``<world>_ceiling_e1_s<seed>.json``,
    each beside the recipe's 1-epoch run on that world and seed and the recipe's data with the ceiling's loss
    (``<world>_kd_only_last_e1_s<seed>.json``: the recipe's settings but ``label_mix`` and the reused teacher), all
    distilled from the same teacher (its AUC on half B agrees to 4 decimals) on the same half B; a 3-epoch ceiling
    where its file is committed."""
    sweep = REPO / "bench" / "results" / "distill_sweep"
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- ceiling table: other worlds -->\n", "\n<!-- /ceiling table: other worlds -->"
    table = doc[doc.index(start) + len(start):doc.index(end)].splitlines()
    files = sorted(f for f in sweep.glob("*_ceiling_e1_s*.json") if not f.name.startswith("open_"))
    assert len(files) == 3 and len(table) == 2 + len(files)
    minutes = sorted(json.loads(f.read_text())["student_seconds"] / 60 for f in files)
    assert f"each; {minutes[0]:.1f}-{minutes[-1]:.1f} minutes of `train-bi` a 1-epoch run on quiet cores" in doc

    def cell(full: float, served: float, steps: int) -> str:
        return f"{full:.3f} / {served:.3f} ({steps})"

    for f in files:
        r = json.loads(f.read_text())
        world, seed = r["world"], r["seed"]
        recipe = json.loads((sweep / f"{world}_last_e1_s{seed}.json").read_text())
        kd = json.loads((sweep / f"{world}_kd_only_last_e1_s{seed}.json").read_text())
        assert _config_changes(kd, recipe) <= {"label_mix", "cross_reused"} and kd["config"]["label_mix"] == "kd", f
        assert kd["split"] == recipe["split"] and kd["config"]["cross_reused"].endswith("cross-{seed}")
        (run,) = [p for p in recipe["per_seed"] if p["seed"] == seed]
        (kd_run,) = kd["per_seed"]
        m, km, teacher = run["metrics"], kd_run["metrics"], run["metrics"]["cross"]["auc"]
        assert round(r["auc"]["cross"], 4) == round(teacher, 4) == round(km["cross"]["auc"], 4), f
        assert (r["label_mix"], r["bi_epochs"], r["b_pairs"]) == ("kd", 1.0, recipe["split"]["b_pairs"]), f
        assert r["cut_rotation"]["applied"] is False and r["cross"].endswith(f"cross-{seed}"), f
        three = sweep / f"{world}_ceiling_e3_s{seed}.json"
        if three.exists():
            r3 = json.loads(three.read_text())
            assert (r3["bi_epochs"], r3["cut_rotation"]["applied"], r3["auc"]["cross"]) == (3.0, False, r["auc"]["cross"])
            e3 = cell(r3["auc"]["student_full"], r3["auc"]["student"], r3["student_steps"])
        else:
            e3 = "not run"
        want = (f"| {world} | {seed} | {teacher:.3f} | "
                f"{cell(m['student_full']['auc'], m['student']['auc'], run['student_steps'])} | "
                f"{cell(km['student_full']['auc'], km['student']['auc'], kd_run['student_steps'])} | "
                f"{cell(r['auc']['student_full'], r['auc']['student'], r['student_steps'])} | {e3} | "
                f"{r['auc']['student_full'] - km['student_full']['auc']:+.3f} |")
        assert want in table, want


def test_the_paired_levers_table_in_the_doc_is_the_committed_runs(curve):
    """docs/TRAINING.md's paired-levers table is what ``paired_levers_table`` makes of the committed files; each lever's
    run is its defaults' split and teacher, with the setting its row names (and the defaults without it)."""
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- paired levers table -->\n", "\n<!-- /paired levers table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == curve.paired_levers_table()
    d = REPO / "bench" / "results" / "distill_sweep"
    for _name, stems in curve.PAIRED_LEVERS:
        for stem in stems:
            r = json.loads((d / f"{stem}.json").read_text())
            base = json.loads(Path(str(curve.PAIRED_DEFAULTS).format(seed=r["per_seed"][0]["seed"])).read_text())
            assert r["world"] == "attr" and r["simulated"] is True and r["split"] == base["split"], stem
            assert base["config"].get("kd_list_loss", "kl") == "kl" and base["config"]["base_model"] == "", stem
            changed = {k for k in set(r["config"]) | set(base["config"])
                       if r["config"].get(k) != base["config"].get(k) and k not in ("cross_reused", "kd_list_loss")}
            if "margin_mse" in stem:
                assert r["config"]["kd_list_loss"] == "margin_mse" and not changed, (stem, changed)
            else:
                assert r["config"].get("kd_list_loss") == "kl" and changed == {"base_model"}, (stem, changed)
                assert ("cross1_as_bi" if "teacher_body" in stem else "base_max") in r["config"]["base_model"]


def test_paired_levers_refuse_a_run_of_another_split_or_teacher(curve, tmp_path):
    d = REPO / "bench" / "results" / "distill_sweep"
    stems = [stem for _, ss in curve.PAIRED_LEVERS for stem in ss]
    for stem in stems:
        (tmp_path / f"{stem}.json").write_text((d / f"{stem}.json").read_text())
    assert curve.paired_levers_table(tmp_path) == curve.paired_levers_table()
    for stem, change in ((stems[1], ("cross", "auc")), (stems[2], ("cross", "truth")), (stems[0], ("split",))):
        r = json.loads((d / f"{stem}.json").read_text())
        if change == ("split",):
            r["split"]["a_pairs"] += 1
        elif change[1] == "truth":
            r["per_seed"][0]["metrics"]["cross"]["truth"]["auc"] += 1e-6  # another teacher, the same AUC on the labels
        else:
            r["per_seed"][0]["metrics"]["cross"]["auc"] += 1e-6
        (tmp_path / f"{stem}.json").write_text(json.dumps(r))
        with pytest.raises(ValueError, match=stem):
            curve.paired_levers_table(tmp_path)
        (tmp_path / f"{stem}.json").write_text((d / f"{stem}.json").read_text())


def test_the_hybrid_table_in_the_doc_is_the_committed_runs_with_every_default(curve):
    """docs/TRAINING.md's hybrid-score table is what ``hybrid_table`` makes of the committed files; each run is
    ``kp eval-labels`` on a simulated world with the hybrid score on (the default) and 6,000 pairs."""
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- hybrid table -->\n", "\n<!-- /hybrid table -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == curve.hybrid_table()
    start, end = "<!-- hybrid summary -->\n", "\n<!-- /hybrid summary -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == curve.hybrid_summary()
    for stem in curve.HYBRID_RUNS:
        r = json.loads((curve.HYBRID / f"{stem}.json").read_text())
        assert r["simulated"] is True and r["config"]["hybrid_score"] is True, stem
        assert r["split"]["a_pairs"] + r["split"]["b_pairs"] == 6000, stem


def test_the_hybrid_table_grades_each_row_against_the_bar(curve, tmp_path):
    """A row meets the bar when the served student is within 0.01 of its teacher and at least +0.05 over the zero-shot
    encoder; a student without a kept hybrid score is its cosine, marked so."""
    r = json.loads((curve.HYBRID / f"{curve.HYBRID_RUNS[0]}.json").read_text())
    ps = r["per_seed"][0]
    m = ps["metrics"]
    m["zero_shot"]["auc"], m["cross"]["auc"], m["student"]["auc"] = 0.70, 0.80, 0.7905
    (tmp_path / "a.json").write_text(json.dumps({**r, "per_seed": [ps]}))
    assert "| yes |" in curve.hybrid_table(tmp_path, ("a",))
    m["student"]["auc"] = 0.7895  # 0.0105 below the teacher
    (tmp_path / "a.json").write_text(json.dumps({**r, "per_seed": [ps]}))
    assert "| no |" in curve.hybrid_table(tmp_path, ("a",))
    m["student"]["auc"], m["zero_shot"]["auc"] = 0.7950, 0.7460  # +0.049 over the zero-shot encoder
    (tmp_path / "a.json").write_text(json.dumps({**r, "per_seed": [ps]}))
    assert "| no |" in curve.hybrid_table(tmp_path, ("a",))
    m.pop("student_cosine", None)
    (tmp_path / "a.json").write_text(json.dumps({**r, "per_seed": [ps]}))
    assert "(not kept)" in curve.hybrid_table(tmp_path, ("a",))
    # each row names the lexical features' version its run fitted (a file without it predates version 2)
    assert curve.hybrid_table(tmp_path, ("a",)).splitlines()[2].startswith(f"| {r['world']} | 1 | v1 |")
    (tmp_path / "b.json").write_text(json.dumps({**r, "per_seed": [ps], "config": {"hybrid_features_version": 2}}))
    assert curve.hybrid_table(tmp_path, ("b",)).splitlines()[2].startswith(f"| {r['world']} | 1 | v2 |")


def test_the_hybrid_summary_averages_each_worlds_seeds_and_counts_the_bar(curve, tmp_path):
    """One line per world: mean ± sample std over its seeds, and on how many seeds the bar is met."""
    r = json.loads((curve.HYBRID / f"{curve.HYBRID_RUNS[0]}.json").read_text())
    seeds = []
    for i, served in enumerate((0.7905, 0.7895, 0.8000)):  # within 0.01 of 0.80; 0.0105 below; above
        ps = json.loads(json.dumps(r["per_seed"][0]))
        m = ps["metrics"]
        ps["seed"], m["zero_shot"]["auc"], m["cross"]["auc"], m["student"]["auc"] = i + 1, 0.70, 0.80, served
        seeds.append(ps)
    (tmp_path / "a.json").write_text(json.dumps({**r, "world": "w", "per_seed": seeds}))
    (tmp_path / "b.json").write_text(json.dumps({**r, "world": "v", "per_seed": seeds[:1]}))
    lines = curve.hybrid_summary(tmp_path, ("a", "b")).splitlines()
    assert lines[2].startswith("| w | v1 | 3 | 0.7000 ± 0.0000 | 0.8000 ± 0.0000 |")
    assert "| 0.7933 ± 0.0058 | -0.0067 ± 0.0058 | +0.0933 ± 0.0058 | 2 of 3 |" in lines[2]
    assert lines[3].startswith("| v | v1 | 1 | 0.7000 | 0.8000 |") and lines[3].endswith("| 1 of 1 |")
    # a world's runs of another lexical features' version are summarised apart
    r2 = {**r, "world": "w", "per_seed": seeds[2:], "config": {**r["config"], "hybrid_features_version": 2}}
    (tmp_path / "c.json").write_text(json.dumps(r2))
    lines = curve.hybrid_summary(tmp_path, ("a", "c")).splitlines()
    assert lines[2].startswith("| w | v1 | 3 |") and lines[3].startswith("| w | v2 | 1 | 0.7000 | 0.8000 |")
    assert [row[:3] for row in curve.hybrid_runs(tmp_path, ("a", "c"))] == [("w", 1, 1), ("w", 2, 1), ("w", 3, 1),
                                                                          ("w", 3, 2)]


def test_the_version_pairs_table_pairs_each_world_and_seed_run_with_both_versions(curve, tmp_path):
    """Only a (world, seed) run with both lexical features' versions is a row; v2 - v1 is the served students'."""
    r = json.loads((curve.HYBRID / f"{curve.HYBRID_RUNS[0]}.json").read_text())
    ps = json.loads(json.dumps(r["per_seed"][0]))
    ps["seed"], ps["metrics"]["student"]["auc"] = 7, 0.8000
    (tmp_path / "v1.json").write_text(json.dumps({**r, "world": "w", "per_seed": [ps]}))
    ps2 = json.loads(json.dumps(ps))
    ps2["metrics"]["student"]["auc"] = 0.8030
    (tmp_path / "v2.json").write_text(json.dumps({**r, "world": "w", "per_seed": [ps2],
                                                  "config": {"hybrid_features_version": 2}}))
    ps3 = {**ps2, "seed": 8}  # a seed run with version 2 only: no pair
    (tmp_path / "v2b.json").write_text(json.dumps({**r, "world": "w", "per_seed": [ps3],
                                                   "config": {"hybrid_features_version": 2}}))
    lines = curve.hybrid_version_pairs(tmp_path, ("v1", "v2", "v2b")).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| w | 7 |")
    assert lines[2].endswith("| 0.8000 | 0.8030 | +0.0030 |") and lines[3].endswith("| +0.0030 |")


def test_the_version_pairs_table_in_the_doc_is_the_committed_runs(curve):
    doc = (REPO / "docs" / "TRAINING.md").read_text()
    start, end = "<!-- hybrid versions -->\n", "\n<!-- /hybrid versions -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == curve.hybrid_version_pairs()
