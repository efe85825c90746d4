import math
from types import SimpleNamespace

import pytest

from keyphrase_pipeline.jobs.judges import get_judge, judge_model_id, p_yes_from_logprobs
from keyphrase_pipeline.jobs.judges.base import answer_word
from keyphrase_pipeline.jobs.judges.vllm_judge import p_yes_from_vllm_output
from keyphrase_pipeline.core.errors import ConfigError, DataError


def test_p_yes_normalises_over_yes_and_no_variants():
    top = {" Yes": math.log(0.3), "yes": math.log(0.1), "No": math.log(0.2), "maybe": math.log(0.4)}
    assert p_yes_from_logprobs(top) == pytest.approx(0.4 / 0.6)
    pairs = [("\u2581yes", math.log(0.5)), ("Ġno", math.log(0.25)), ("YES.", math.log(0.25))]
    assert p_yes_from_logprobs(pairs) == pytest.approx(0.75)
    assert p_yes_from_logprobs({"yes": 0.0}) == 1.0
    assert p_yes_from_logprobs({"no": -0.01, "x": -5}) == 0.0


def test_answer_word_reads_only_yes_no():
    assert answer_word(" YES") == "yes" and answer_word("▁no") == "no"
    assert answer_word("yesterday") is None and answer_word("not") is None and answer_word("") is None


@pytest.mark.parametrize("bad", [{}, {"Sure": -0.1, "!": -3.0}, {"yes": "abc"}, {"yes": float("nan")}])
def test_malformed_answers_raise_data_error(bad):
    with pytest.raises(DataError):
        p_yes_from_logprobs(bad)


def _vllm_output(tokens):
    lp = {i: SimpleNamespace(logprob=v, rank=i + 1, decoded_token=t) for i, (t, v) in enumerate(tokens)}
    return SimpleNamespace(outputs=[SimpleNamespace(text=tokens[0][0], logprobs=[lp])])


def test_vllm_output_extraction_on_vllm_shaped_object():
    out = _vllm_output([(" yes", math.log(0.6)), (" no", math.log(0.2)), (" No", math.log(0.2))])
    assert p_yes_from_vllm_output(out) == pytest.approx(0.6)
    with pytest.raises(DataError):
        p_yes_from_vllm_output(SimpleNamespace(outputs=[SimpleNamespace(logprobs=None)]))
    with pytest.raises(DataError):
        p_yes_from_vllm_output(_vllm_output([("maybe", -0.1)]))


def test_vllm_backend_without_vllm_is_a_clear_config_error(settings):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    s = settings.with_overrides(**{"judge.backend": "vllm", "judge.model": "meta-llama/Llama-3.1-8B-Instruct"})
    with pytest.raises(ConfigError, match="vLLM"):
        get_judge(s)


def test_judge_model_ids(settings):
    assert judge_model_id(settings) == "simulated-annotator-v1"
    s = settings.with_overrides(**{"judge.backend": "transformers", "judge.model": "/x/y/smollm2-135m/"})
    assert judge_model_id(s) == "smollm2-135m"
    s = settings.with_overrides(**{"judge.backend": "openai", "judge.model": "mistralai/Mixtral-8x7B-Instruct-v0.1"})
    assert judge_model_id(s) == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    with pytest.raises(ConfigError, match="judge.model"):
        judge_model_id(settings.with_overrides(**{"judge.backend": "openai"}))
    with pytest.raises(ConfigError, match="local model directory"):
        get_judge(settings.with_overrides(**{"judge.backend": "transformers", "judge.model": "/nonexistent"}))
