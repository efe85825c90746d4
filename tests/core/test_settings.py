import pytest

from keyphrase_pipeline.core.errors import ConfigError
from keyphrase_pipeline.core.settings import get_settings, load_settings


def test_defaults_run_the_demo_on_one_machine():
    s = load_settings()
    assert s.lake_root == "var/lake"
    assert s.spark.master == "local[*]"
    assert s.ctr.ctr_threshold == 0.05 and s.ctr.window_days == 30
    assert s.judge.backend == "simulated"
    assert s.serve.dim == 64 and 64 in s.train.matryoshka_dims
    assert s.train.kd_loss == "pearson"


def test_environment_overrides_nested_fields(monkeypatch):
    monkeypatch.setenv("KP_LAKE_ROOT", "s3a://bucket/kp")
    monkeypatch.setenv("KP_CTR__MIN_IMPRESSIONS", "50")
    monkeypatch.setenv("KP_SPARK__MASTER", "spark://master:7077")
    monkeypatch.setenv("KP_TRAIN__MATRYOSHKA_DIMS", "[384, 128, 64]")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert s.lake_root == "s3a://bucket/kp"
        assert s.ctr.min_impressions == 50
        assert s.spark.master == "spark://master:7077"
        assert s.train.matryoshka_dims == [384, 128, 64]
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "values, field",
    [
        ({"ctr": {"ctr_threshold": 1.5}}, "ctr.ctr_threshold"),
        ({"judge": {"backend": "gpt-magic"}}, "judge.backend"),
        ({"train": {"label_mix": "llm+clicks"}}, "train.label_mix"),
        ({"serve": {"dim": 48}}, "serve.dim"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_values_give_a_clear_error_naming_the_field(values, field):
    with pytest.raises(ConfigError) as exc:
        load_settings(**values)
    assert field.split(".")[-1] in str(exc.value)


def test_bad_environment_value_is_a_config_error(monkeypatch):
    monkeypatch.setenv("KP_CTR__WINDOW_DAYS", "thirty")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="window_days"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_secrets_are_never_shown():
    s = load_settings(judge={"api_key": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s)
    assert "sk-very-secret" not in str(s.public_dict())
    assert s.judge.api_key.get_secret_value() == "sk-very-secret"


def test_with_overrides_keeps_the_rest_and_the_secret():
    s = load_settings(judge={"api_key": "k"}, ctr={"min_impressions": 7})
    t = s.with_overrides(**{"pairs.daily_budget": 123})
    assert t.pairs.daily_budget == 123 and t.ctr.min_impressions == 7
    assert t.judge.api_key.get_secret_value() == "k"
    with pytest.raises(ConfigError):
        s.with_overrides(**{"pairs.daily_budget": -1})


def test_label_mix_is_normalised():
    assert load_settings(train={"label_mix": "LLM + ctr+KD"}).train.label_mix == "llm+ctr+kd"


@pytest.mark.parametrize("cap", [0, -2])
def test_step_caps_are_positive_or_minus_one(cap):
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.core.settings import load_settings

    with pytest.raises(ConfigError, match="step cap"):
        load_settings(train={"bi_max_steps": cap})
    assert load_settings(train={"cross_max_steps": -1}).train.cross_max_steps == -1


def test_the_waits_must_leave_the_stages_time_in_the_dag_runs_timeout():
    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.core.settings import load_settings

    s = load_settings(lake_root="/tmp/x")
    assert s.dag.input_wait_hours + max(s.review.approval_timeout_hours, s.review.adjudication_timeout_hours) <= 18
    with pytest.raises(ConfigError, match="20-hour timeout"):
        load_settings(lake_root="/tmp/x", review={"adjudication_timeout_hours": 8})  # 12 + 8 > 18
    load_settings(lake_root="/tmp/x", dag={"input_wait_hours": 4}, review={"approval_timeout_hours": 14})
    # a wait that cannot happen does not count: nobody is asked
    load_settings(lake_root="/tmp/x", dag={"input_wait_hours": 14}, review={"approval": False, "adjudication_pairs": 0})
