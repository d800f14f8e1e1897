"""One vocabulary of request kinds (`formats/requests.py`): lm-eval's own, and every place
that treats the kinds differently refuses one it does not know instead of falling through."""

import json

import numpy as np
import pytest

from e2lmc.errors import UserError
from e2lmc.formats.plan import Plan, PlannedRequest, PlannedSample, read_plan, write_plan
from e2lmc.formats.requests import GENERATE, KINDS, LOGLIKELIHOOD, ROLLING, prompt_of, request_key

UNKNOWN = "loglikelihood_sideways"


def test_the_kinds_are_the_requests_an_lm_eval_model_answers():
    """A model of lm-eval's answers exactly these: a kind lm-eval adds fails here first."""
    from lm_eval.api.model import LM

    assert set(KINDS) == set(LM.__abstractmethods__) == {LOGLIKELIHOOD, ROLLING, GENERATE}


def _plan(kind: str) -> Plan:
    arguments = json.dumps(["Question: which planet is red?\nAnswer:", " Mars"])
    return Plan("t", "acc,none", True, 1, [PlannedRequest(kind, arguments, "t", 0)],
                samples=[PlannedSample("t", 0, [0])])


def test_the_prompt_rule_counts_every_kind_and_refuses_another():
    assert prompt_of(LOGLIKELIHOOD, ["context", " continuation"]) == "context continuation"
    assert prompt_of(ROLLING, ["a whole text"]) == prompt_of(GENERATE, ["a whole text", {"until": ["\n"]}])
    with pytest.raises(ValueError, match=f"unknown request kind '{UNKNOWN}'"):
        prompt_of(UNKNOWN, ["context"])


def test_the_recording_model_answers_every_kind_and_refuses_another():
    from e2lmc.sandboxed.tasks import placeholder

    assert [placeholder(kind) for kind in KINDS] == [(0.0, False), 0.0, ""]
    with pytest.raises(ValueError, match="unknown request kind"):
        placeholder(UNKNOWN)


def test_packing_and_the_engines_responses_refuse_an_unknown_kind():
    from e2lmc.engine.packing import tokenize
    from e2lmc.engine.runner import scored_response

    with pytest.raises(ValueError, match="unknown request kind"):
        tokenize([request_key(UNKNOWN, ("context", " continuation"))], encoder=None)
    sums, greedy = np.array([-1.5, -2.0]), np.array([True, False])
    assert scored_response(LOGLIKELIHOOD, [0], sums, greedy) == (-1.5, True)
    assert scored_response(ROLLING, [0, 1], sums, greedy) == -3.5
    with pytest.raises(ValueError, match="unknown request kind"):
        scored_response(UNKNOWN, [0], sums, greedy)


def test_the_judges_text_refuses_an_unknown_kind():
    from e2lmc.ingestion.derived import qa_text

    plan = _plan(LOGLIKELIHOOD)
    assert qa_text(plan, plan.samples[0]).endswith("Answer: Mars")
    plan = _plan(UNKNOWN)
    with pytest.raises(ValueError, match="unknown request kind"):
        qa_text(plan, plan.samples[0])


def test_diagnose_analyses_log_likelihoods_refuses_generation_and_an_unknown_kind():
    from e2lmc.participant.diagnose import analysable

    assert analysable(_plan(LOGLIKELIHOOD)) is None and analysable(_plan(ROLLING)) is None
    assert "generates text" in analysable(_plan(GENERATE))
    with pytest.raises(ValueError, match="unknown request kind"):
        analysable(_plan(UNKNOWN))


def test_a_plan_with_an_unknown_kind_is_refused_when_read(tmp_path):
    """plan.json comes from the child that ran the submission's code: the parent's reader
    names the key, before any handler could meet the kind."""
    write_plan(_plan(UNKNOWN), tmp_path)
    with pytest.raises(UserError, match=r"requests\[0\]\.kind is 'loglikelihood_sideways'; expected one of"):
        read_plan(tmp_path)
