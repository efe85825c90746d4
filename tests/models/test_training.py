"""Shared training parts: the budget from the data, thresholds, the held-out evaluator, the wall-clock cap."""

from __future__ import annotations

import pytest

from keyphrase_pipeline.models.training import budget_arguments, plan_budget, stop_reason, wall_clock_cap


def test_budget_comes_from_the_data_and_caps_only_cap():
    b = plan_budget(train_rows=7000, batch_size=32, epochs=4, step_cap=-1, warmup_ratio=0.1, evals_per_epoch=2,
                    max_minutes=60, has_heldout=True)
    assert b.steps_per_epoch == 219 and b.max_steps == 876 and b.epochs == 4.0
    assert b.eval_steps == 109 and b.warmup_steps == 88
    assert "4 epoch(s) x 219 steps" in b.reason and "best checkpoint" in b.reason
    capped = plan_budget(7000, 32, 4, 150, 0.1, 2, 0, True)
    assert capped.max_steps == 150 and "capped at 150" in capped.reason and capped.warmup_steps == 15
    bigger_cap = plan_budget(100, 32, 1, 500, 0.0, 2, 0, True)   # a cap above the data's budget is no target
    assert bigger_cap.max_steps == 4
    assert plan_budget(100, 32, 1, -1, 0.0, 2, 0, has_heldout=False).eval_steps == 0
    assert plan_budget(100, 32, 1, -1, 0.0, 0, 0, has_heldout=True).eval_steps == 0


def test_budget_arguments_keep_the_best_checkpoint_by_heldout_auc():
    from transformers import EarlyStoppingCallback

    b = plan_budget(1000, 10, 2, -1, 0.1, 2, 5, True)
    kwargs, callbacks = budget_arguments(b, patience=3)
    assert kwargs["max_steps"] == 200 and kwargs["eval_steps"] == 50 and kwargs["save_steps"] == 50
    assert kwargs["load_best_model_at_end"] and kwargs["metric_for_best_model"] == "eval_heldout_auc"
    assert any(isinstance(c, EarlyStoppingCallback) for c in callbacks) and len(callbacks) == 2  # + wall clock
    kwargs, callbacks = budget_arguments(plan_budget(1000, 10, 2, -1, 0.1, 0, 0, True), patience=3)
    assert kwargs["save_strategy"] == "no" and "load_best_model_at_end" not in kwargs and callbacks == []


def test_wall_clock_cap_stops_training():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cap = wall_clock_cap(0.0)
    args = TrainingArguments(output_dir="/tmp/unused", eval_strategy="steps", eval_steps=5, report_to=[])
    state, control = TrainerState(), TrainerControl()
    cap.on_train_begin(args, state, control)
    out = cap.on_step_end(args, state, control)
    assert out.should_training_stop and out.should_evaluate and out.should_save
    last = wall_clock_cap(0.0, keep="last")   # nothing to choose from: no checkpoint written at the cap
    last.on_train_begin(args, state, TrainerControl())
    out = last.on_step_end(args, state, TrainerControl())
    assert out.should_training_stop and out.should_evaluate and not out.should_save
    patient = wall_clock_cap(10.0)
    patient.on_train_begin(args, state, TrainerControl())
    assert not patient.on_step_end(args, state, TrainerControl()).should_training_stop
    b = plan_budget(100, 10, 1, -1, 0.0, 2, 10, True)  # 10 planned steps
    assert stop_reason(3, b, [cap]) == "wall_clock_cap"
    assert stop_reason(6, b, [patient]) == "early_stopping"
    assert stop_reason(10, b, [patient]) == stop_reason(10, b, []) == "budget"


def test_a_command_lines_step_cap_is_validated(tmp_path):
    import pytest
    from testsupport import make_settings

    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.models.training import with_step_cap

    s = make_settings(tmp_path / "lake")
    assert with_step_cap(s, "bi_max_steps", None) is s
    assert with_step_cap(s, "bi_max_steps", 7).train.bi_max_steps == 7
    assert with_step_cap(s, "cross_max_steps", -1).train.cross_max_steps == -1
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="--max-steps"):
            with_step_cap(s, "cross_max_steps", bad)


def test_warm_step_cap_replaces_the_cap_only_for_a_warm_start():
    from keyphrase_pipeline.core.settings import Settings
    from keyphrase_pipeline.models.training import warm_step_cap

    s = Settings(train={"bi_max_steps": 250, "warm_bi_max_steps": 100})
    assert warm_step_cap(s, "bi_max_steps", "warm_bi_max_steps", warm=True).train.bi_max_steps == 100
    assert warm_step_cap(s, "bi_max_steps", "warm_bi_max_steps", warm=False).train.bi_max_steps == 250
    small = Settings(train={"bi_max_steps": 8, "warm_bi_max_steps": 100})  # never more steps than a cold start
    assert warm_step_cap(small, "bi_max_steps", "warm_bi_max_steps", warm=True).train.bi_max_steps == 8
    uncapped = Settings(train={"warm_bi_max_steps": 100})  # cold: the epochs decide; warm: the cap
    assert warm_step_cap(uncapped, "bi_max_steps", "warm_bi_max_steps", warm=True).train.bi_max_steps == 100
    unset = Settings(train={"cross_max_steps": 150})  # warm cap -1: the ordinary cap
    assert warm_step_cap(unset, "cross_max_steps", "warm_cross_max_steps", warm=True).train.cross_max_steps == 150
    with pytest.raises(ValueError, match="step cap"):
        Settings(train={"warm_cross_max_steps": 0})


def test_save_curves_of_an_empty_history_draws_empty_axes_without_a_warning(tmp_path):
    """A run too short to log a loss (one step) still gets its curves file, and no matplotlib legend warning."""
    import warnings

    from keyphrase_pipeline.models.training import save_curves

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="No artists with labels found")
        save_curves([], str(tmp_path / "curves.png"), "empty")
    assert (tmp_path / "curves.png").stat().st_size > 0
