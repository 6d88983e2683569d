"""Fidelity cards: every paper experiment has one, its config matches it, drift fails."""

import json
import os
import re

import pytest

from tf_sgd_regimes import experiments
from tf_sgd_regimes.reference import fidelity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The appendix sits beside the repository (../shared) or beside a worktree (../../shared).
APPENDIX_CANDIDATES = [os.path.join(REPO, *up, "shared", "paper", "appendix.md")
                       for up in ((["..", ".."][:1]), ["..", ".."])]
PAPER = fidelity.paper_experiment_names()


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_every_paper_experiment_has_a_card_covering_every_topic():
    assert len(PAPER) == 13 and set(PAPER) <= set(experiments.names())
    for name in PAPER:
        card = fidelity.card_for(name)
        assert card, name
        missing = set(fidelity.TOPICS) - {fact.topic for fact in card}
        assert not missing, f"{name}'s card lacks {sorted(missing)}"
        assert {fact.topic for fact in card} <= set(fidelity.TOPICS), name
    assert fidelity.card_for("digits_mlp_epoch_budget") is None


@pytest.mark.parametrize("name", PAPER)
def test_config_matches_its_card(name):
    assert fidelity.check(experiments.get_config(name), fidelity.card_for(name)) == []


@pytest.mark.parametrize("name", PAPER)
def test_every_source_is_named_and_choices_say_why(name):
    for fact in fidelity.card_for(name):
        assert fact.source, (name, fact)
        if fact.source == fidelity.APPENDIX:
            assert fact.quote, f"{name}: appendix fact {fact.topic} has no quote"
        if fact.source == fidelity.OUR_CHOICE:
            assert fact.note or fact.value is not None, (name, fact)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, (tuple, list)):
        return tuple(value)[:-1] if len(value) > 1 else tuple(value) * 2
    raise AssertionError(f"no change rule for {value!r}")


@pytest.mark.parametrize("name", PAPER)
def test_any_drift_of_a_checked_field_is_caught(name):
    card = fidelity.card_for(name)
    fields = sorted({f.field for f in card if f.field and f.field not in fidelity.DERIVED})
    assert fields
    for field in fields:
        config = experiments.get_config(name)
        *parents, leaf = field.split(".")
        holder = config
        for part in parents:
            holder = holder[part]
        holder[leaf] = _changed(holder[leaf])
        problems = fidelity.check(config, card)
        assert problems and all(field in p for p in problems), (name, field, problems)
    # Derived facts: the seed count and the grid's ratio.
    config = experiments.get_config(name)
    config.sweep.seeds = tuple(range(len(config.sweep.seeds) + 1))
    lrs = list(config.sweep.effective_lrs)
    config.sweep.effective_lrs = tuple(lrs[:2] + [lrs[1] * 5])
    problems = " ".join(fidelity.check(config, card))
    assert "derived.num_seeds" in problems and "derived.lr_ratio" in problems


def test_appendix_quotes_are_verbatim():
    path = next((p for p in APPENDIX_CANDIDATES if os.path.exists(p)), None)
    if path is None:
        pytest.fail(f"the paper appendix is not beside the repository ({APPENDIX_CANDIDATES})")
    appendix = _normalise(open(path, encoding="utf-8").read())
    for name in PAPER:
        for fact in fidelity.card_for(name):
            if fact.source == fidelity.APPENDIX:
                assert _normalise(fact.quote) in appendix, (name, fact.topic, fact.quote)


def test_report_lines_show_choices_and_this_runs_departures():
    config = experiments.get_config("ptb_lstm_step_budget")
    lines = fidelity.report_lines(config)
    text = "\n".join(lines)
    assert lines[0].startswith("Fidelity card of ptb_lstm_step_budget")
    assert "our choices" in text and "eval_batch_size" not in text.split("our choices")[0]
    assert "matches the card" in text
    shrunk = experiments.apply_overrides(config, ("sweep.seeds=(0,1)",))
    text = "\n".join(fidelity.report_lines(shrunk))
    assert "DEPARTS FROM THE CARD" in text and "derived.num_seeds = 2" in text
    # Experiments without a card print nothing.
    assert fidelity.report_lines(experiments.get_config("digits_mlp_epoch_budget")) == []
    # The plain dict of config.json (lists for tuples) works as well as a ConfigDict.
    written = json.loads(experiments.get_config("ptb_lstm_step_budget").to_json())
    assert fidelity.report_lines(written)[-1].endswith("matches the card")
