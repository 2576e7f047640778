"""Early stopping and model selection in optimizer steps: remember the best step, stop after patience.

Feed one validation result per evaluation with the step it was measured at. ``monitor`` says what
"best" means:

- ``val_loss``: the lowest validation cross-entropy;
- ``val_accuracy``: the highest validation accuracy, ties broken by the lower loss. On a small real
  fold a memorising CNN's loss swings by 10x between evaluations while its accuracy does not
  (the demo's real arm: train loss 0.01, validation loss 1.2-18), so the lowest loss can be an
  early step at chance accuracy; the accuracy is what the held-out table reports.

A fit may stop once ``patience`` steps have passed without an improvement AND at least ``min_steps``
steps have run: the floor keeps a fit from ending while BatchNorm statistics and the first epochs
still make the validation loss rise (the knife edge that ended the demo's real arm after 28 steps
at chance). Epoch budgets use the same class with positions in steps and patience = epochs x
steps per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Monitor = Literal["val_loss", "val_accuracy"]


def selection_key(loss: float, accuracy: float, monitor: Monitor) -> tuple[float, float]:
    """Lower is better: (loss, 0) or (-accuracy, loss); the one ordering of fits and of steps."""
    return (-accuracy, loss) if monitor == "val_accuracy" else (loss, 0.0)


@dataclass
class EarlyStopping:
    patience: int  # steps without an improvement (by more than min_delta) before stopping
    min_delta: float = 0.0  # in the monitored metric's units
    min_steps: int = 0  # no stop before this step
    monitor: Monitor = "val_loss"
    best_loss: float = math.inf
    best_accuracy: float = -math.inf
    best_step: int = -1  # -1: no finite validation result seen yet
    history: list[tuple[int, float, float]] = field(default_factory=list)

    def step(self, val_loss: float, at: int, val_accuracy: float = math.nan) -> bool:
        """Record the validation result measured after step ``at``; True when it is the new best."""
        self.history.append((int(at), float(val_loss), float(val_accuracy)))
        if not self._improves(float(val_loss), float(val_accuracy)):
            return False
        self.best_loss, self.best_accuracy, self.best_step = float(val_loss), float(val_accuracy), int(at)
        return True

    def _improves(self, loss: float, accuracy: float) -> bool:
        if not math.isfinite(loss):
            return False
        if self.monitor == "val_loss":
            return loss < self.best_loss - self.min_delta
        if not math.isfinite(accuracy):
            raise ValueError("monitor='val_accuracy' needs a finite val_accuracy at every step")
        if accuracy > self.best_accuracy + self.min_delta:
            return True
        # a tie on accuracy: the lower loss (the more confident fit) wins, the order of selection_key
        return accuracy >= self.best_accuracy and loss < self.best_loss

    @property
    def last_step(self) -> int:
        return self.history[-1][0] if self.history else 0

    @property
    def should_stop(self) -> bool:
        if not self.history or self.last_step < self.min_steps:
            return False
        since = self.last_step - (self.best_step if self.best_step >= 0 else 0)
        return since >= self.patience
