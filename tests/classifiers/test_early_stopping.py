"""Early stopping in optimizer steps, with controlled validation-loss curves."""

from __future__ import annotations

from classifiers.early_stopping import EarlyStopping


def run(curve: list[float], patience: int, min_delta: float = 0.0, every: int = 10,
        min_steps: int = 0) -> EarlyStopping:
    stopper = EarlyStopping(patience, min_delta, min_steps)
    for i, loss in enumerate(curve, start=1):
        stopper.step(loss, at=i * every)
        if stopper.should_stop:
            break
    return stopper


def test_stops_after_patience_steps_without_improvement() -> None:
    stopper = run([1.0, 0.8, 0.6, 0.65, 0.7, 0.61, 0.9, 0.5, 0.4], patience=30)
    assert stopper.best_step == 30 and stopper.best_loss == 0.6
    assert len(stopper.history) == 6  # stopped 30 steps after the best, never saw 0.5


def test_keeps_going_while_improving() -> None:
    stopper = run([1.0, 0.9, 0.8, 0.7, 0.6], patience=10)
    assert not stopper.should_stop and stopper.best_step == 50


def test_min_delta_ignores_tiny_gains_and_nan_is_no_gain() -> None:
    stopper = run([1.0, 0.999, 0.998, float("nan")], patience=30, min_delta=0.01)
    assert stopper.should_stop and stopper.best_step == 10


def test_no_stop_before_min_steps_even_when_the_loss_first_rises() -> None:
    """The demo's knife edge: the loss rises while BatchNorm settles, then falls. The floor outlasts it."""
    curve = [1.39, 1.45, 1.6, 1.7, 1.65, 1.2, 0.9, 0.6]
    early = run(curve, patience=30, every=10)
    assert early.should_stop and early.best_step == 10 and len(early.history) == 4  # the old failure
    floor = run(curve, patience=30, every=10, min_steps=80)
    assert not floor.should_stop and floor.best_step == 80 and floor.best_loss == 0.6
