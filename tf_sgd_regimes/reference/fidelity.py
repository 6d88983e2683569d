"""Fidelity cards: how faithfully each paper experiment's config follows the paper.

A card is a list of Facts kept next to the config it describes (`CARDS` in each paper config
module under configs/). Every fact names its source:

  * "appendix": the paper's appendix states it; `quote` holds its words verbatim (a test
    finds each quote in the appendix text);
  * "main text": the paper's main text (section 4), as recorded in DESIGN.md;
  * a citation (e.g. "Zaremba et al. 2014, main.lua"): an implementation the paper follows;
  * "our choice": nothing the paper or its sources state; `note` says why;
  * "not applicable": the topic does not arise for this model (e.g. unroll for a CNN).

A fact with a `field` is checked against the config (`check`), so a config that drifts
from its card fails the tests, and a run whose overrides depart from the card is reported
as such (`report_lines`, printed by report/compose.py with the tables).
"""

import dataclasses
import importlib
import math
from typing import List, Optional

APPENDIX = "appendix"
MAIN_TEXT = "main text"
OUR_CHOICE = "our choice"
NOT_APPLICABLE = "not applicable"

# Every card states each of these (value and source; "not applicable" where it does not arise).
TOPICS = (
    "model", "widths", "normalisation", "ghost batch size", "L2", "L2 scope", "dropout",
    "gradient clip", "unroll", "init range", "augmentation", "budget", "batch sizes",
    "LR grid spacing", "LR grid bounds", "seeds", "best k", "selection split",
    "selection metric", "schedule", "decay factor", "warmup", "momentum", "training loss",
)

# Config modules whose experiments are the paper's (each defines CARDS: variant -> facts).
PAPER_MODULES = ("wrn_cifar", "resnet_imagenet", "ptb_lstm", "mnist_autoencoder")


@dataclasses.dataclass(frozen=True)
class Fact:
    """One fact of an experiment.

    topic: one of TOPICS.
    value: what the experiment uses (compared with the config at `field` when given).
    source: APPENDIX, MAIN_TEXT, a citation, OUR_CHOICE or NOT_APPLICABLE.
    quote: the source's words (required, verbatim, for APPENDIX facts).
    field: a config path ("model.depth", "sweep.seeds") or a derived key (DERIVED); ""
      when the fact lives in code, not in a config field.
    note: why, for our choices and for departures from a source.
    """

    topic: str
    value: object
    source: str
    quote: str = ""
    field: str = ""
    note: str = ""

    @property
    def is_choice(self) -> bool:
        return self.source == OUR_CHOICE


def best_k_of_n(k: int, n: int, source: str, quote: str = "") -> List[Fact]:
    """The two facts of "the mean of the best k of n runs": n seeds, best k, one quote."""
    return [Fact("seeds", n, source, quote=quote, field="derived.num_seeds"),
            Fact("best k", k, source, quote=quote, field="analysis.best_k")]


def _lr_ratio(config) -> Optional[float]:
    """The common ratio of the learning-rate grid, or None when it is not geometric."""
    lrs = sorted(float(v) for v in _get(config, "sweep.effective_lrs"))
    if len(lrs) < 2:
        return None
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    if max(ratios) - min(ratios) > 1e-6 * max(ratios):
        return None
    return ratios[0]


# Properties of a config that no single field holds.
DERIVED = {
    "derived.lr_ratio": _lr_ratio,
    "derived.num_seeds": lambda config: len(tuple(_get(config, "sweep.seeds"))),
    "derived.lr_bounds": lambda config: (min(_get(config, "sweep.effective_lrs")),
                                         max(_get(config, "sweep.effective_lrs"))),
}


def _get(config, path: str):
    """config["a"]["b"] for "a.b", for a ConfigDict or the plain dict of config.json."""
    value = config
    for part in path.split("."):
        if isinstance(value, dict) or hasattr(value, "keys"):
            if part not in value:
                raise KeyError(path)
            value = value[part]
        else:
            raise KeyError(path)
    return value


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def config_value(config, field: str):
    if field in DERIVED:
        return DERIVED[field](config)
    return _get(config, field)


def check(config, card: List[Fact]) -> List[str]:
    """Where the config departs from its card: one message per fact, empty when faithful."""
    problems = []
    for fact in card:
        if not fact.field:
            continue
        try:
            actual = config_value(config, fact.field)
        except KeyError:
            problems.append(f"{fact.topic}: config has no field {fact.field} "
                            f"(card: {fact.value!r}, {fact.source})")
            continue
        if not _same(actual, fact.value):
            problems.append(f"{fact.topic}: {fact.field} = {actual!r}, card says "
                            f"{fact.value!r} ({fact.source})")
    return problems


def card_for(name: str) -> Optional[List[Fact]]:
    """The card of a paper experiment by name, or None (embedded and user experiments)."""
    for module_name in PAPER_MODULES:
        module = importlib.import_module(f"tf_sgd_regimes.configs.{module_name}")
        cards = getattr(module, "CARDS", {})
        if name in cards:
            return list(cards[name])
    return None


def paper_experiment_names() -> List[str]:
    names = []
    for module_name in PAPER_MODULES:
        module = importlib.import_module(f"tf_sgd_regimes.configs.{module_name}")
        names.extend(getattr(module, "_VARIANTS", {}) or [module.get_config().name])
    return sorted(names)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)) and len(value) > 6:
        return f"{_format_value(value[0])} .. {_format_value(value[-1])} ({len(value)} values)"
    return str(value)


def report_lines(config) -> List[str]:
    """The card's summary for a report: sources, our choices, and this run's departures."""
    name = _get(config, "name") if "name" in config else ""
    card = card_for(name) if name else None
    if card is None:
        return []
    counts = {}
    for fact in card:
        kind = fact.source if fact.source in (APPENDIX, MAIN_TEXT, OUR_CHOICE,
                                              NOT_APPLICABLE) else "cited source"
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{counts[k]} {k}" for k in (APPENDIX, MAIN_TEXT, "cited source",
                                                     OUR_CHOICE, NOT_APPLICABLE) if k in counts)
    lines = [f"Fidelity card of {name} ({len(card)} facts: {summary})"]
    choices = [f for f in card if f.is_choice]
    if choices:
        lines.append("  our choices (not stated by the paper or its sources):")
        lines += [f"    - {f.topic}: {_format_value(f.value)}" + (f" ({f.note})" if f.note else "")
                  for f in choices]
    drift = check(config, card)
    if drift:
        lines.append("  THIS RUN DEPARTS FROM THE CARD (overrides):")
        lines += [f"    - {problem}" for problem in drift]
    else:
        lines.append("  this run's config matches the card")
    return lines
