"""The recommended recipe's head: chosen by cross-validation on cached features.

With a frozen backbone, the head is all that trains, and on a few hundred images the
choice that matters most is how strongly it is regularised. So instead of one fixed
head trained for a fixed number of epochs, the recipe fits an L2-regularised softmax
(multinomial logistic regression on standardised features, solved exactly) for a small
grid of strengths, scores each by stratified k-fold cross-validation on the training
images, keeps the best (accuracy, ties: lower log loss), and refits it on all of them.
Horizontal flips are added in feature space: each image's features and its mirror
image's features are both training rows (of the same fold, so no image leaks across).

The recipe was chosen by cross-validation on the training part of flowers5 only (never
its held-out images); ``bench/bench_recipes.py`` compares it with the named presets on
held-out images.

The fitted model is folded into the Keras head's ``logits`` Dense layer (the
standardisation becomes part of its kernel and bias), so the saved model is an ordinary
Keras model that takes raw images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Inverse L2 strengths tried (sklearn's C): from strong to weak regularisation.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MAX_FOLDS = 5
MAX_ITER = 3000


@dataclass(frozen=True)
class HeadSearchResult:
    """What the search chose and how it scored.

    Attributes:
        c: the chosen inverse L2 strength.
        cv_accuracy, cv_log_loss: its cross-validated figures (mean over out-of-fold
            predictions of every image, scored on the original, unflipped image).
        n: images cross-validated (each scored once, out of fold).
        folds: number of folds (0: too few images per class to cross-validate; ``c`` is
            then the middle of the grid and the CV figures are None).
        candidates: ``[{"c", "accuracy", "log_loss"}]`` for every strength tried.
        kernel, bias: the refitted model as a ``logits`` Dense layer's weights, taking
            raw (unstandardised) features.
        train_accuracy, train_loss: the refitted model on its own training rows.
    """

    c: float
    cv_accuracy: float | None
    cv_log_loss: float | None
    n: int
    folds: int
    candidates: list[dict] = field(default_factory=list)
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    train_accuracy: float = 0.0
    train_loss: float = 0.0

    def describe(self) -> str:
        if not self.folds:
            return f"too few images per class to cross-validate; used C = {self.c:g}"
        return (
            f"{self.folds}-fold cross-validation on {self.n} images chose L2 strength "
            f"C = {self.c:g} ({self.cv_accuracy:.1%} cross-validated accuracy)"
        )


def _fit(x, y, c: float, num_classes: int, balanced: bool):
    """A standardised multinomial logistic regression; returns (mean, scale, model)."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(
        C=c, max_iter=MAX_ITER, class_weight="balanced" if balanced else None
    )
    with warnings.catch_warnings():
        # lbfgs may stop a hair short of its tolerance at weak regularisation; the
        # fit is still the one cross-validation scored, so the warning is noise here.
        warnings.simplefilter("ignore")
        model.fit((x - mean) / scale, y)
    return mean, scale, model


def _probabilities(fitted, x, num_classes: int) -> np.ndarray:
    mean, scale, model = fitted
    raw = model.predict_proba((x - mean) / scale)
    probs = np.zeros((len(x), num_classes))
    probs[:, model.classes_] = raw  # a fold may miss a class; it then gets probability 0
    return probs


def score(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(accuracy, mean log loss)`` of class probabilities against labels."""
    accuracy = float(np.mean(np.argmax(probs, axis=1) == y))
    picked = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return accuracy, float(-np.mean(np.log(picked)))


def _folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    k = min(MAX_FOLDS, smallest)
    if k < 2:
        return []
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _folded_dense(fitted, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model as ``logits = features @ kernel + bias`` on raw features."""
    mean, scale, model = fitted
    coef = np.zeros((num_classes, len(mean)))
    intercept = np.zeros(num_classes)
    if len(model.classes_) == 2 and coef.shape[0] >= 2 and model.coef_.shape[0] == 1:
        # Binary logistic regression has one logit z for classes_[1]; softmax over
        # (0, z) gives the same probabilities.
        coef[model.classes_[1]] = model.coef_[0]
        intercept[model.classes_[1]] = model.intercept_[0]
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    missing = np.setdiff1d(np.arange(num_classes), model.classes_)
    intercept[missing] = -1e4 if len(missing) else 0.0  # a class never seen is never predicted
    kernel = (coef / scale).T
    bias = intercept - (coef * (mean / scale)).sum(axis=1)
    return kernel.astype(np.float32), bias.astype(np.float32)


def search(
    features: np.ndarray,
    flipped: np.ndarray | None,
    labels: np.ndarray,
    num_classes: int,
    *,
    seed: int = 42,
    balanced: bool = False,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> HeadSearchResult | None:
    """Chooses the L2 strength by k-fold CV, then refits on every row.

    Args:
        features: ``(n, d)`` pooled backbone features of the training images.
        flipped: ``(n, d)`` features of the same images mirrored, or None.
        labels: ``(n,)`` class indices.
        num_classes: classes of the model (some may have no image).
        seed: seeds the folds.
        balanced: weigh classes by inverse frequency (``class_weights="balanced"``).
        progress: called with ``(fits done, fits in all)``.
        should_stop: polled between fits; True stops the search (returns None).

    Returns:
        The `HeadSearchResult`, or None when stopped.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    xf = np.asarray(flipped, dtype=np.float64) if flipped is not None else None
    folds = _folds(y, seed)
    total = len(folds) * len(C_GRID) + 1
    done = 0

    def rows(idx):
        if xf is None:
            return x[idx], y[idx]
        return np.concatenate([x[idx], xf[idx]]), np.concatenate([y[idx], y[idx]])

    candidates = []
    for c in C_GRID if folds else ():
        probs = np.zeros((len(y), num_classes))
        for train_idx, held_idx in folds:
            if should_stop and should_stop():
                return None
            fitted = _fit(*rows(train_idx), c, num_classes, balanced)
            probs[held_idx] = _probabilities(fitted, x[held_idx], num_classes)
            done += 1
            if progress:
                progress(done, total)
        accuracy, loss = score(probs, y)
        candidates.append({"c": c, "accuracy": accuracy, "log_loss": loss})
    if candidates:
        best = min(candidates, key=lambda r: (-r["accuracy"], r["log_loss"]))
        c, cv_accuracy, cv_loss = best["c"], best["accuracy"], best["log_loss"]
    else:
        c, cv_accuracy, cv_loss = C_GRID[len(C_GRID) // 2], None, None
    if should_stop and should_stop():
        return None
    fitted = _fit(*rows(np.arange(len(y))), c, num_classes, balanced)
    kernel, bias = _folded_dense(fitted, num_classes)
    train_accuracy, train_loss = score(_probabilities(fitted, x, num_classes), y)
    if progress:
        progress(total, total)
    return HeadSearchResult(
        c=c,
        cv_accuracy=cv_accuracy,
        cv_log_loss=cv_loss if cv_loss is None or math.isfinite(cv_loss) else None,
        n=len(y),
        folds=len(folds),
        candidates=candidates,
        kernel=kernel,
        bias=bias,
        train_accuracy=train_accuracy,
        train_loss=train_loss,
    )
