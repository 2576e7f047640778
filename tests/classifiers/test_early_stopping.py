"""Early stopping with a controlled validation-loss curve."""

from __future__ import annotations

from classifiers.early_stopping import EarlyStopping


def run(curve: list[float], patience: int, min_delta: float = 0.0) -> EarlyStopping:
    stopper = EarlyStopping(patience, min_delta)
    for loss in curve:
        stopper.step(loss)
        if stopper.should_stop:
            break
    return stopper


def test_stops_after_patience_epochs_without_improvement() -> None:
    stopper = run([1.0, 0.8, 0.6, 0.65, 0.7, 0.61, 0.9, 0.5, 0.4], patience=3)
    assert stopper.best_epoch == 2 and stopper.best_loss == 0.6
    assert len(stopper.history) == 6  # stopped at the third epoch after the best, never saw 0.5


def test_keeps_going_while_improving() -> None:
    stopper = run([1.0, 0.9, 0.8, 0.7, 0.6], patience=1)
    assert not stopper.should_stop and stopper.best_epoch == 4


def test_min_delta_ignores_tiny_gains_and_nan_is_no_gain() -> None:
    stopper = run([1.0, 0.999, 0.998, float("nan")], patience=3, min_delta=0.01)
    assert stopper.should_stop and stopper.best_epoch == 0
