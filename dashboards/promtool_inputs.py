"""Inputs and expectations of the generated promtool tests, shaped as the exporter sends them.

Prometheus scrapes every 15 s; the exporter's gauges hold the last round's value, and rounds
come every 5 minutes. A test describes a series round by round; `series` writes each round
as 20 samples. Round k's samples start 30 s after k x 5 m, so an evaluation at a whole
minute never falls on a round boundary. "Noisy" rounds vary ±25 %: either a seeded random
draw (silent cases: no expected value to compute) or the repeating pattern ×1, ×1.25, ×0.75,
whose median over any window of three or more rounds is the level itself, so a firing
case's `$value` is known exactly.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from dashboards.mixin_config import MixinConfig, parse_selector, seconds

SCRAPE = 15  # seconds between scrapes: the shipped prometheus.yml
ROUND = 300  # seconds between probe rounds in every test: the default interval
SCRAPES_PER_ROUND = ROUND // SCRAPE
ROUND_OFFSET = 30  # round k's first sample is at k * ROUND + ROUND_OFFSET
ROUNDS_PER_HOUR = 3600 // ROUND
DAY = 24 * ROUNDS_PER_HOUR
# Checks of the exporter alerts are 2 minutes past a round's start (1.5 minutes into its data).
PAST_ROUND = 120

Value = Union[float, str, None]  # a number, "stale" (the series ends), or None (not exported)


# --- rounds ------------------------------------------------------------------------------


def cycle(level: float, rounds: int) -> list[Value]:
    """±25 % per round, median over any three or more rounds exactly `level`."""
    return [round(level * (1.0, 1.25, 0.75)[i % 3], 6) for i in range(rounds)]


def jitter(level: float, rounds: int, seed: int) -> list[Value]:
    """±25 % per round, drawn uniformly with a fixed seed."""
    draw = random.Random(seed)
    return [round(level * (1 + draw.uniform(-0.25, 0.25)), 4) for _ in range(rounds)]


def const(level: float, rounds: int) -> list[Value]:
    return [level] * rounds


def gap(rounds: int) -> list[Value]:
    return [None] * rounds


def values_text(rounds: Sequence[Value]) -> str:
    """promtool's notation of the samples: every round is SCRAPES_PER_ROUND samples, after
    ROUND_OFFSET seconds of nothing; a "stale" round is one stale marker and then nothing."""
    samples: list[Value] = [None] * (ROUND_OFFSET // SCRAPE)
    for value in rounds:
        if value == "stale":
            samples += ["stale"] + [None] * (SCRAPES_PER_ROUND - 1)
        else:
            samples += [value] * SCRAPES_PER_ROUND
    while samples and samples[-1] is None:
        samples.pop()
    tokens: list[str] = []
    i = 0
    while i < len(samples):
        run = 1
        while i + run < len(samples) and samples[i + run] == samples[i] and samples[i] != "stale":
            run += 1
        value = samples[i]
        if value is None:  # `_xN` is N missing samples, where `vxN` is N + 1 values
            tokens.append(f"_x{run}" if run > 1 else "_")
        else:
            text = value if isinstance(value, str) else f"{value:g}"
            tokens.append(f"{text}x{run - 1}" if run > 1 else text)
        i += run
    return " ".join(tokens)


def labels_text(metric: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def series(metric: str, labels: dict[str, str], rounds: Sequence[Value]) -> dict[str, str]:
    return {"series": labels_text(metric, labels), "values": values_text(rounds)}


def round_at(t: float) -> int:
    """The round whose value a gauge shows at time t."""
    return int((t - ROUND_OFFSET) // ROUND)


def when(rounds: int, past: int = PAST_ROUND) -> str:
    """The evaluation time `past` seconds after the given number of rounds from the start."""
    return duration_text(rounds * ROUND + past)


def duration_text(total: int) -> str:
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


# --- targets -----------------------------------------------------------------------------


def selector_labels(config: MixinConfig) -> dict[str, str]:
    """Label values the test series carry so that the selector picks them."""
    labels: dict[str, str] = {}
    for name, (operator, value) in parse_selector(config.exporter_selector).items():
        if operator != "=":
            raise ValueError(f"promtool tests need `=` matchers in the selector; {name}{operator}{value!r} is not one")
        labels[name] = value
    labels.setdefault("job", "pyparallel")
    return labels


@dataclass
class Target:
    """One scrape target of the exporter: the selector's labels, an address, a host (None:
    the scrape config sets no host label)."""

    config: MixinConfig
    instance: str = "host-a:9860"
    host: Optional[str] = "host-a"

    @property
    def labels(self) -> dict[str, str]:
        labels = {**selector_labels(self.config), "instance": self.instance}
        if self.host is not None:
            labels[self.config.host_label] = self.host
        return labels

    @property
    def host_name(self) -> str:
        """The host the rules name: the host label, else the fallback label."""
        return self.host if self.host is not None else self.labels[self.config.host_fallback_label]

    @property
    def alert_labels(self) -> dict[str, str]:
        """The target's labels as an alert about it carries them (the host always named)."""
        return {**self.labels, self.config.host_label: self.host_name}

    def step(self, interpreter: str, workload: str, mode: str, workers: int) -> dict[str, str]:
        return {**self.labels, "interpreter": interpreter, "workload": workload, "mode": mode,
                "workers": str(workers)}

    def alert_step(self, interpreter: str, workload: str, mode: str, workers: int) -> dict[str, str]:
        return {**self.step(interpreter, workload, mode, workers), self.config.host_label: self.host_name}

    def node_step(self, interpreter: str, workload: str, mode: str, workers: int) -> dict[str, str]:
        """The labels of a host-level (recorded) series of this step."""
        labels = self.alert_step(interpreter, workload, mode, workers)
        del labels["instance"]
        return labels


# --- expectations ------------------------------------------------------------------------


def humanize_duration(value: float) -> str:
    """Prometheus' humanizeDuration for whole seconds of a minute or more."""
    whole = int(value)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {secs}s"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{value:.4g}s"


def humanize_timestamp(value: float) -> str:
    """Prometheus' humanizeTimestamp (Go's time.Time printed in UTC) for whole seconds."""
    moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def render(text: str, labels: dict[str, str], value: float, queries: Optional[dict[str, float]] = None) -> str:
    """The subset of Prometheus' alert templating the annotations use. `queries` maps the
    text of a template query (see alerting.query_value) to the number it prints."""
    out = text
    for template, result in (queries or {}).items():
        out = out.replace(template, f"{result:.2f}")
    for name, label in labels.items():
        out = out.replace(f"{{{{ $labels.{name} }}}}", label)
    out = out.replace('{{ printf "%.2f" $value }}', f"{value:.2f}")
    out = out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    out = out.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
    out = out.replace("{{ $value | humanizeTimestamp }}", humanize_timestamp(value))
    assert "{{" not in out, f"template construct not rendered by the test generator: {out}"
    return out


def rule_named(groups: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def fires(groups: Iterable[dict[str, Any]], name: str, at: str, labels: dict[str, str], value: float,
          queries: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """An alert_rule_test case: `name` fires once, with these labels and this `$value`."""
    rule = rule_named(groups, name)
    annotations = {key: render(text, labels, value, queries) for key, text in rule["annotations"].items()}
    return {"alertname": name, "eval_time": at, "exp_alerts": [
        {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}]}


def silent(name: str, at: str) -> dict[str, Any]:
    return {"alertname": name, "eval_time": at, "exp_alerts": []}


def case(name: str, inputs: Iterable[dict[str, str]], checks: list[dict[str, Any]],
         exprs: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    test: dict[str, Any] = {"name": name, "interval": f"{SCRAPE}s", "input_series": list(inputs)}
    if checks:
        test["alert_rule_test"] = checks
    if exprs:
        test["promql_expr_test"] = exprs
    return test


def unit_test_file(rule_files: list[str], tests: list[dict[str, Any]], evaluation_interval: str) -> dict[str, Any]:
    return {"rule_files": rule_files, "evaluation_interval": evaluation_interval, "tests": tests}


def rounds_in(config: MixinConfig, name: str) -> int:
    """Whole probe rounds in the duration field `name` of the config."""
    return seconds(getattr(config, name)) // ROUND
