"""One Vowpal Wabbit contextual-bandit model per slot.

`SlotModel` owns its workspace, its argument string, its example format and its
snapshot format; nothing else in Tacit builds VW example strings. A VW
workspace is not thread-safe, so every call into it holds the model's lock.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import vowpalwabbit

logger = logging.getLogger("tacit.learning")

FeatureValue = str | float | int | bool
Features = Mapping[str, FeatureValue]

SHARED_NAMESPACE = "U"
ACTION_NAMESPACE = "A"
_UNSAFE = re.compile(r"[\s|:]+")
_REQUIRED_ARG = "--cb_explore_adf"


class BanditConfigError(ValueError):
    """The VW argument string for a slot is not a usable contextual-bandit setup."""


def _token(text: str) -> str:
    """Makes a string safe as a VW feature name (no whitespace, pipes or colons)."""
    return _UNSAFE.sub("_", text) or "_"


# A namespace whose features weigh more than this is built each time, not cached: clients
# choose the values (strings of up to limits.max_string_chars), and 100,000 cached contexts of
# 20 KB each would hold gigabytes for good. Catalog features are far below it.
MAX_CACHED_FEATURE_CHARS = 512


def _namespace_line(namespace: str, features: Features) -> str:
    # Catalog features repeat across requests: cache the line by content (with
    # types, so True and 1.0 do not share an entry).
    key = (namespace, tuple(sorted((name, type(value).__name__, value) for name, value in features.items())))
    weight = sum(16 + len(name) + (len(value) if isinstance(value, str) else 8) for name, _t, value in key[1])
    if weight > MAX_CACHED_FEATURE_CHARS:
        return _line(key)
    return _cached_line(key)


def _written(name: str, value: FeatureValue) -> tuple[str, float | None] | None:
    """A feature as VW sees it: (name, value) for a number, (name=token, None) for a token; None
    when it is not written (a zero or non-finite number)."""
    feature = _token(name)
    if isinstance(value, bool):
        return f"{feature}={int(value)}", None
    if isinstance(value, int | float):
        number = float(value)
        return (feature, number) if math.isfinite(number) and number != 0.0 else None
    return f"{feature}={_token(value)}", None


def _line(key: tuple[str, tuple[tuple[str, str, FeatureValue], ...]]) -> str:
    namespace, items = key
    parts = [f"|{namespace}"]
    for name, _type, value in items:
        written = _written(name, value)
        if written is not None:
            feature, number = written
            parts.append(feature if number is None else f"{feature}:{number:.6g}")
    return " ".join(parts)


def feature_terms(namespace: str, features: Features) -> dict[str, float]:
    """The linear terms an example line of ``features`` holds, named as VW's --invert_hash names
    them ("U^device=mobile", "U^hour") with their values."""
    terms = {}
    for name, value in features.items():
        written = _written(name, value)
        if written is not None:
            feature, number = written
            terms[f"{namespace}^{feature}"] = 1.0 if number is None else float(f"{number:.6g}")
    return terms


_cached_line = lru_cache(maxsize=100_000)(_line)


def action_line(action: Features) -> str:
    """One action's line of an unlabelled example, for callers that keep it per candidate."""
    return _namespace_line(ACTION_NAMESPACE, action)


def build_example(
    context: Features,
    actions: Sequence[Features],
    label: tuple[int, float, float] | None = None,
) -> list[str]:
    """Builds a multi-line ADF example: one shared line, one line per action.

    `label` is (chosen index, cost, logged probability) when learning.
    """
    lines = ["shared " + _namespace_line(SHARED_NAMESPACE, context)]
    for index, action in enumerate(actions):
        line = _namespace_line(ACTION_NAMESPACE, action)
        if label is not None and label[0] == index:
            line = f"0:{label[1]:.6g}:{label[2]:.6g} {line}"
        lines.append(line)
    return lines


@dataclass(frozen=True)
class Prediction:
    """Probability per action, in the order the actions were given."""

    probabilities: tuple[float, ...]
    model_version: str


# Flags that break Tacit's loop: Tacit owns the model files and the example format,
# learns online through `learn`, and serves probabilities for every action.
_LOOP_BREAKING = {
    "-i": "Tacit manages model files",
    "--initial_regressor": "Tacit manages model files",
    "-f": "Tacit manages model files",
    "--final_regressor": "Tacit manages model files",
    "-d": "Tacit feeds the examples",
    "--data": "Tacit feeds the examples",
    "--dsjson": "Tacit writes text examples",
    "--json": "Tacit writes text examples",
    "-t": "a test-only model never learns",
    "--testonly": "a test-only model never learns",
    "--daemon": "Tacit serves the model itself",
    "--port": "Tacit serves the model itself",
    "-c": "Tacit learns online, without a cache",
    "--cache": "Tacit learns online, without a cache",
    "--cache_file": "Tacit learns online, without a cache",
    "--passes": "Tacit learns online, one pass",
    "-p": "Tacit reads predictions from the API",
    "--predictions": "Tacit reads predictions from the API",
    "-r": "Tacit reads predictions from the API",
    "--raw_predictions": "Tacit reads predictions from the API",
    "--readable_model": "Tacit manages model files",
    "--invert_hash": "Tacit manages model files",
    "--cb_explore": "Tacit's examples are action-dependent (ADF)",
    "--cb": "Tacit's examples are action-dependent (ADF)",
    "--ccb_explore_adf": "Tacit logs one choice per decision",
    "--slates": "Tacit logs one choice per decision",
    "--cats": "Tacit's actions are discrete candidates",
}
# Options whose value names namespaces (by their first character), and the
# characters such a value may use: Tacit's two namespaces and VW's ':' wildcard.
_NAMESPACE_OPTIONS = {
    "-q": ":",
    "--quadratic": ":",
    "--cubic": ":",
    "--interactions": ":",
    "--ignore": "",
    "--ignore_linear": "",
    "--keep": "",
}
_WRITTEN = SHARED_NAMESPACE + ACTION_NAMESPACE


def _options(vw_args: str) -> list[tuple[str, str | None]]:
    """(option, value) pairs; `-qUA`, `--quadratic=UA` and `-q UA` all become ("-q", "UA")."""
    tokens = shlex.split(vw_args)
    pairs: list[tuple[str, str | None]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.startswith("--") and "=" in token:
            name, glued = token.split("=", 1)
            pairs.append((name, glued))
        elif token in _NAMESPACE_OPTIONS:
            following = tokens[index] if index < len(tokens) else None
            index += following is not None
            pairs.append((token, following))
        elif token.startswith("-q") and not token.startswith("--"):
            pairs.append(("-q", token[2:]))
        else:
            pairs.append((token, None))
    return pairs


def validate_arguments(vw_args: str) -> str:
    """Checks that the slot's VW arguments describe an ADF explore policy Tacit can feed.

    Tacit writes the shared (context) features in namespace `U` and each action's in
    `A`: an interaction, `--ignore` or `--keep` naming any other namespace would
    silently match nothing, so it is refused, as are flags that break the loop.
    """
    try:
        options = _options(vw_args)
    except ValueError:
        raise BanditConfigError("vw_args is not a valid argument string (unbalanced quotes)") from None
    names = [name for name, _ in options]
    if _REQUIRED_ARG not in names:
        raise BanditConfigError(f"vw_args must contain {_REQUIRED_ARG}")
    for name, _ in options:
        if name in _LOOP_BREAKING:
            raise BanditConfigError(f"vw_args may not set {name}: {_LOOP_BREAKING[name]}")
    for name, value in options:
        if name not in _NAMESPACE_OPTIONS:
            continue
        allowed = _WRITTEN + _NAMESPACE_OPTIONS[name]
        if not value or any(character not in allowed for character in value):
            raise BanditConfigError(
                f"vw_args {name} must name only Tacit's namespaces {SHARED_NAMESPACE} (context) and "
                f"{ACTION_NAMESPACE} (actions){' or the wildcard :' if _NAMESPACE_OPTIONS[name] else ''}, "
                f"e.g. {name} UA"
            )
    return vw_args


def check_workspace(vw_args: str) -> None:
    """Builds and discards a workspace, so VW refuses an unknown or inconsistent option at config load."""
    try:
        workspace = vowpalwabbit.Workspace(f"{validate_arguments(vw_args)} --quiet")
    except RuntimeError as error:
        raise BanditConfigError(f"Vowpal Wabbit refuses vw_args: {error}") from None
    workspace.finish()


class SlotModel:
    """A slot's VW workspace: predict, learn and snapshot under one lock."""

    def __init__(
        self,
        vw_args: str,
        model_version: str = "v0",
        model_path: Path | None = None,
        random_seed: int | None = None,
    ):
        self.vw_args = validate_arguments(vw_args)
        self.model_version = model_version
        arguments = f"{self.vw_args} --quiet"
        if model_path is None and random_seed is not None and "--random_seed" not in self.vw_args.split():
            # VW's own randomness (e.g. --bag's bootstrap) is seeded too, for replays. A
            # checkpoint carries its seed state (VW refuses a second, different one).
            arguments += f" --random_seed {random_seed}"
        if model_path is not None:
            arguments += f" -i {model_path}"
        self._workspace = vowpalwabbit.Workspace(arguments)
        self._lock = threading.Lock()
        self.examples_learned = 0

    def predict(self, context: Features, actions: Sequence[Features]) -> Prediction:
        """Returns the policy's probability for every action (sums to 1)."""
        return self.predict_lines(context, [action_line(action) for action in actions])

    def predict_lines(self, context: Features, action_lines: Sequence[str]) -> Prediction:
        """`predict` with each action's line already built by `action_line` (the same example)."""
        example = ["shared " + _namespace_line(SHARED_NAMESPACE, context), *action_lines]
        with self._lock:
            pmf = self._workspace.predict(example)
        total = float(sum(pmf))
        if len(pmf) != len(action_lines) or not total > 0:
            uniform = 1.0 / len(action_lines)
            return Prediction(tuple(uniform for _ in action_lines), self.model_version)
        return Prediction(tuple(float(p) / total for p in pmf), self.model_version)

    def learn(
        self,
        context: Features,
        actions: Sequence[Features],
        chosen_index: int,
        reward: float,
        probability: float,
    ) -> None:
        """Learns from one logged decision: cost is the negative reward."""
        example = build_example(context, actions, (chosen_index, -reward, probability))
        with self._lock:
            self._workspace.learn(example)
            self.examples_learned += 1

    def save(self, path: Path) -> None:
        """Writes a snapshot that `SlotModel(..., model_path=path)` can load."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with self._lock:
            self._workspace.save(str(tmp))
        tmp.replace(path)

    def close(self) -> None:
        with self._lock:
            self._workspace.finish()
