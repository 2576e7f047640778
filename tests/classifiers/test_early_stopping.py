"""Early stopping in optimizer steps, with controlled validation-loss curves."""

from __future__ import annotations

import pytest

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


# The demo's real fold 2 (seed 20240501, before select_on): (val_loss, val_accuracy) every 20 steps.
DEMO_FOLD = [(1.39, 0.25), (2.10, 0.25), (1.64, 0.53), (1.94, 0.57), (4.04, 0.34), (18.32, 0.26),
             (10.28, 0.25), (3.78, 0.34)]


def watch(curve: list[tuple[float, float]], monitor: str, patience: int = 1000) -> EarlyStopping:
    stopper = EarlyStopping(patience, monitor=monitor)  # type: ignore[arg-type]
    for i, (loss, accuracy) in enumerate(curve, start=1):
        stopper.step(loss, at=i * 20, val_accuracy=accuracy)
    return stopper


def test_val_loss_picks_the_early_chance_step_that_val_accuracy_avoids() -> None:
    assert watch(DEMO_FOLD, "val_loss").best_step == 20  # 0.25 accuracy: the lowest loss is at chance
    by_accuracy = watch(DEMO_FOLD, "val_accuracy")
    assert by_accuracy.best_step == 80 and by_accuracy.best_accuracy == 0.57


def test_accuracy_ties_go_to_the_lower_loss_and_count_as_improvement() -> None:
    stopper = watch([(1.0, 0.5), (0.8, 0.5), (0.9, 0.5), (2.0, 0.4)], "val_accuracy", patience=50)
    assert stopper.best_step == 40 and stopper.best_loss == 0.8
    assert not stopper.should_stop  # the tie at step 40 reset the patience: 80 - 40 < 50
    stopper.step(3.0, at=100, val_accuracy=0.45)
    assert stopper.should_stop


def test_accuracy_monitor_needs_the_accuracy() -> None:
    with pytest.raises(ValueError, match="val_accuracy"):  # never a silent fall-back to the loss
        EarlyStopping(10, monitor="val_accuracy").step(1.0, at=10)
