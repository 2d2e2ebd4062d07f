"""A trained classifier compiled for serving: plain numpy arrays, built once per model version.

The reference path scores a row through ``CalibratedClassifierCV`` → one
``Pipeline(ColumnTransformer, model)`` per calibration fold, with scikit-learn's
input checks at every step — milliseconds for one row (the profile in
bench/bench_predict.py's docstring). ``compile_classifier`` reads the fitted
parameters once — each fold's scaler means and scales, one-hot categories,
model (linear weights, RBF support vectors, or the trees of a gradient-boosting
or random-forest ensemble) and Platt calibrator — and scores rows with a few
vectorized numpy operations doing the same arithmetic, so scores agree with the
reference path to rounding (checked on held-out rows in
tests/learning/test_compiled.py).

A model it does not know (another estimator, another calibration method, extra
pipeline steps) compiles to ``None`` and the caller keeps the reference path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from tacit.learning.classifiers import FeatureRows, TrainedModel, _feature_matrix

__all__ = ["CompiledClassifier", "compile_classifier"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


class _Unsupported(Exception):
    """The fitted model has a part this module does not compile."""


@dataclass(frozen=True)
class _Encoder:
    """One fold's ColumnTransformer: scaled numeric block, then one-hot blocks."""

    numeric: IntArray
    """Positions in the feature row of the scaled columns, in output order."""
    mean: FloatArray
    scale: FloatArray
    one_hot: tuple[tuple[int, Mapping[str, int]], ...]
    """(position in the feature row, category → output column) per one-hot column."""
    width: int


def _encoder(columns: Any) -> _Encoder:
    if not isinstance(columns, ColumnTransformer):
        raise _Unsupported("first step")
    numeric: list[int] = []
    means: list[FloatArray] = []
    scales: list[FloatArray] = []
    one_hot: list[tuple[int, dict[str, int]]] = []
    width = 0
    for _, transformer, positions in columns.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        positions = list(positions)
        if isinstance(transformer, StandardScaler):
            if width != 0 or transformer.with_mean is False or transformer.with_std is False:
                raise _Unsupported("scaler")
            numeric, width = positions, len(positions)
            means.append(np.asarray(transformer.mean_, dtype=np.float64))
            scales.append(np.asarray(transformer.scale_, dtype=np.float64))
        elif isinstance(transformer, OneHotEncoder):
            if (
                transformer.drop_idx_ is not None
                or transformer._infrequent_enabled
                or transformer.handle_unknown != "ignore"
            ):
                raise _Unsupported("one-hot encoder")
            for position, categories in zip(positions, transformer.categories_, strict=True):
                one_hot.append((position, {str(c): width + i for i, c in enumerate(categories)}))
                width += len(categories)
        else:
            raise _Unsupported("column transformer")
    if not means:
        raise _Unsupported("no numeric block")
    return _Encoder(np.asarray(numeric, dtype=np.intp), means[0], scales[0], tuple(one_hot), width)


@dataclass(frozen=True)
class _Inputs:
    """Every fold's ColumnTransformer at once: the folds' outputs side by side in one row."""

    numeric: IntArray
    """Positions in the feature row of the scaled features (the same in every fold)."""
    mean: FloatArray
    scale: FloatArray
    """(folds, scaled features): each fold's StandardScaler."""
    numeric_columns: IntArray
    """Where the (folds × scaled features) values go in the joint row."""
    one_hot: tuple[tuple[int, Mapping[str, IntArray]], ...]
    """(position in the feature row, category → its column in every fold that knows it)."""
    width: int

    @classmethod
    def join(cls, encoders: list[_Encoder]) -> _Inputs:
        first = encoders[0]
        if any(not np.array_equal(e.numeric, first.numeric) for e in encoders):
            raise _Unsupported("folds scale different features")
        offsets = np.cumsum([0] + [e.width for e in encoders])
        numeric_columns = np.concatenate([o + np.arange(first.numeric.size) for o in offsets[:-1]])
        one_hot: dict[int, dict[str, list[int]]] = {}
        for offset, encoder in zip(offsets, encoders, strict=False):
            for position, columns in encoder.one_hot:
                for category, column in columns.items():
                    one_hot.setdefault(position, {}).setdefault(category, []).append(offset + column)
        return cls(
            numeric=first.numeric,
            mean=np.stack([e.mean for e in encoders]),
            scale=np.stack([e.scale for e in encoders]),
            numeric_columns=numeric_columns.astype(np.intp),
            one_hot=tuple(
                (position, {c: np.asarray(v, dtype=np.intp) for c, v in columns.items()})
                for position, columns in one_hot.items()
            ),
            width=int(offsets[-1]),
        )

    def encode(self, matrix: NDArray[Any]) -> FloatArray:
        """(rows, joint width): each fold's ColumnTransformer(StandardScaler, OneHotEncoder) output."""
        rows = matrix.shape[0]
        out = np.zeros((rows, self.width), dtype=np.float64)
        scaled = matrix[:, self.numeric].astype(np.float64)[:, None, :] - self.mean
        scaled /= self.scale
        out[:, self.numeric_columns] = scaled.reshape(rows, -1)
        for position, columns in self.one_hot:
            for row, value in enumerate(matrix[:, position]):
                found = columns.get(value)
                if found is not None:
                    out[row, found] = 1.0
        return out


@dataclass(frozen=True)
class _Trees:
    """Every tree of every fold as one node table, walked level by level for all trees at once."""

    feature: IntArray
    """Column in the joint row; 0 at leaves."""
    threshold: FloatArray
    children: IntArray
    """``children[2 * node + (x <= threshold)]``: right then left child of every node; a leaf
    points to itself twice, so extra levels leave it in place."""
    value: FloatArray
    """Leaf output: a raw score (gradient boosting) or the positive-class fraction (forest)."""
    roots: IntArray
    fold_starts: IntArray
    """Index of each fold's first tree among the roots (for per-fold sums)."""
    depth: int
    float32: bool
    """Random-forest trees compare float32 inputs (scikit-learn casts X to float32)."""

    def leaf_values(self, joint: FloatArray) -> FloatArray:
        """(rows, trees) leaf outputs for the joint rows."""
        x = joint.astype(np.float32) if self.float32 else joint
        if x.shape[0] == 1:  # one row (a served score): plain 1-d gathers
            row, node = x[0], self.roots
            for _ in range(self.depth):
                node = self.children[2 * node + (row[self.feature[node]] <= self.threshold[node])]
            return self.value[node][None, :]
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], self.roots.size))
        for _ in range(self.depth):
            node = self.children[2 * node + (x[rows, self.feature[node]] <= self.threshold[node])]
        return self.value[node]


class _TreeTable:
    """Collects trees into the arrays of `_Trees`."""

    def __init__(self) -> None:
        self.parts: dict[str, list[NDArray[Any]]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "value")
        }
        self.roots: list[int] = []
        self.fold_starts: list[int] = []
        self.size = 0
        self.depth = 0

    def add(
        self,
        feature: NDArray[Any],
        threshold: NDArray[Any],
        left: NDArray[Any],
        right: NDArray[Any],
        is_leaf: NDArray[np.bool_],
        value: NDArray[Any],
        depth: int,
        column_offset: int,
    ) -> None:
        own = np.arange(feature.size, dtype=np.intp) + self.size
        self.parts["feature"].append(np.where(is_leaf, 0, feature.astype(np.intp) + column_offset))
        self.parts["threshold"].append(np.where(is_leaf, 0.0, threshold.astype(np.float64)))
        self.parts["left"].append(np.where(is_leaf, own, left.astype(np.intp) + self.size))
        self.parts["right"].append(np.where(is_leaf, own, right.astype(np.intp) + self.size))
        self.parts["value"].append(np.where(is_leaf, value.astype(np.float64), 0.0))
        self.roots.append(self.size)
        self.size += feature.size
        self.depth = max(self.depth, depth)

    def build(self, float32: bool) -> _Trees:
        joined = {k: np.concatenate(v) for k, v in self.parts.items()}
        return _Trees(
            feature=joined["feature"],
            threshold=joined["threshold"],
            children=np.stack([joined["right"], joined["left"]], axis=1).ravel(),
            value=joined["value"],
            roots=np.asarray(self.roots, dtype=np.intp),
            fold_starts=np.asarray(self.fold_starts, dtype=np.intp),
            depth=self.depth,
            float32=float32,
        )


def _add_boosting(table: _TreeTable, model: HistGradientBoostingClassifier, offset: int) -> float:
    if model._preprocessor is not None or model.n_trees_per_iteration_ != 1:
        raise _Unsupported("gradient boosting with categorical support or several classes")
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise _Unsupported("categorical split")
        is_leaf = nodes["is_leaf"].astype(bool)
        table.add(
            nodes["feature_idx"], nodes["num_threshold"], nodes["left"], nodes["right"],
            is_leaf, nodes["value"], int(nodes["depth"].max()), offset,
        )  # fmt: skip
    return float(model._baseline_prediction[0, 0])


def _add_forest(table: _TreeTable, model: RandomForestClassifier, offset: int) -> None:
    if model.n_outputs_ != 1:
        raise _Unsupported("multi-output forest")
    for tree in model.estimators_:
        nodes = tree.tree_
        is_leaf = nodes.children_left == -1
        counts = nodes.value[:, 0, :]
        total = counts.sum(axis=1)
        total[total == 0.0] = 1.0
        table.add(
            nodes.feature, nodes.threshold, nodes.children_left, nodes.children_right,
            is_leaf, counts[:, 1] / total, int(nodes.max_depth), offset,
        )  # fmt: skip


@dataclass(frozen=True)
class _Fold:
    encoder: _Encoder
    offset: int
    """First column of this fold's output in the joint row."""
    a: float
    b: float
    """Platt calibrator: p = 1 / (1 + exp(a * score + b))."""
    linear: tuple[FloatArray, float] | None = None
    svm: tuple[FloatArray, FloatArray, float, float] | None = None
    """Support vectors, dual coefficients, intercept, gamma."""
    base_score: float = 0.0
    """Gradient boosting's baseline raw prediction."""


@dataclass(frozen=True)
class CompiledClassifier:
    """Calibrated positive-class probability from plain arrays; same answers as the reference path."""

    feature_names: tuple[str, ...]
    categorical_features: tuple[str, ...]
    inputs: _Inputs
    folds: tuple[_Fold, ...]
    trees: _Trees | None
    forest: bool
    a: FloatArray
    b: FloatArray
    """Each fold's Platt calibrator: p = 1 / (1 + exp(a * score + b))."""

    def predict_proba(self, rows: FeatureRows) -> FloatArray:
        """Calibrated probability of the positive class; FeatureError on a missing feature."""
        matrix = _feature_matrix(rows, self.feature_names, self.categorical_features)
        joint = self.inputs.encode(matrix)
        scores = np.empty((matrix.shape[0], len(self.folds)), dtype=np.float64)
        if self.trees is not None:
            leaves = self.trees.leaf_values(joint)
            per_fold = np.add.reduceat(leaves, self.trees.fold_starts, axis=1)
            if self.forest:
                sizes = np.diff(np.append(self.trees.fold_starts, leaves.shape[1]))
                per_fold /= sizes
        for index, fold in enumerate(self.folds):
            x = joint[:, fold.offset : fold.offset + fold.encoder.width]
            if fold.linear is not None:
                weights, intercept = fold.linear
                scores[:, index] = x @ weights + intercept
            elif fold.svm is not None:
                vectors, dual, intercept, gamma = fold.svm
                distance = ((x[:, None, :] - vectors[None, :, :]) ** 2).sum(axis=2)
                scores[:, index] = np.exp(-gamma * distance) @ dual + intercept
            else:
                scores[:, index] = per_fold[:, index] + fold.base_score
        # CalibratedClassifierCV: the mean over folds of each fold's calibrated probability.
        return np.asarray(expit(-(self.a * scores + self.b)).sum(axis=1) / len(self.folds))


def compile_classifier(model: TrainedModel) -> CompiledClassifier | None:
    """The serving form of ``model``, or None when a part of it is not one this module compiles."""
    try:
        return _compile(model)
    except _Unsupported:
        return None


def _compile(model: TrainedModel) -> CompiledClassifier:
    calibrated = model.estimator
    if not isinstance(calibrated, CalibratedClassifierCV) or list(calibrated.classes_) != [0, 1]:
        raise _Unsupported("calibration wrapper")
    table = _TreeTable()
    folds: list[_Fold] = []
    kinds: set[type] = set()
    offset = 0
    for fold in calibrated.calibrated_classifiers_:
        pipeline = fold.estimator
        if (
            fold.method != "sigmoid"
            or len(fold.calibrators) != 1
            or not isinstance(pipeline, Pipeline)
            or len(pipeline.steps) != 2
        ):
            raise _Unsupported("calibrated fold")
        encoder = _encoder(pipeline.steps[0][1])
        estimator = pipeline.steps[1][1]
        if list(getattr(estimator, "classes_", [])) != [0, 1]:
            raise _Unsupported("classes")
        kinds.add(type(estimator))
        a, b = float(fold.calibrators[0].a_), float(fold.calibrators[0].b_)
        fields: dict[str, Any] = {}
        if type(estimator) is LogisticRegression:
            fields["linear"] = (
                np.asarray(estimator.coef_[0], dtype=np.float64),
                float(estimator.intercept_[0]),
            )
        elif type(estimator) is SVC:
            if estimator.kernel != "rbf":
                raise _Unsupported("svm kernel")
            fields["svm"] = (
                np.asarray(estimator.support_vectors_, dtype=np.float64),
                np.asarray(estimator.dual_coef_[0], dtype=np.float64),
                float(estimator.intercept_[0]),
                float(estimator._gamma),
            )
        elif type(estimator) is HistGradientBoostingClassifier:
            table.fold_starts.append(len(table.roots))
            fields["base_score"] = _add_boosting(table, estimator, offset)
        elif type(estimator) is RandomForestClassifier:
            table.fold_starts.append(len(table.roots))
            _add_forest(table, estimator, offset)
        else:
            raise _Unsupported("estimator")
        folds.append(_Fold(encoder, offset, a, b, **fields))
        offset += encoder.width
    if len(kinds) != 1:
        raise _Unsupported("folds of different kinds")
    return CompiledClassifier(
        feature_names=tuple(model.feature_names),
        categorical_features=tuple(model.categorical_features),
        inputs=_Inputs.join([fold.encoder for fold in folds]),
        folds=tuple(folds),
        trees=table.build(float32=RandomForestClassifier in kinds) if table.roots else None,
        forest=RandomForestClassifier in kinds,
        a=np.array([fold.a for fold in folds]),
        b=np.array([fold.b for fold in folds]),
    )
