"""Early stopping on validation loss, in optimizer steps: remember the best step, stop after patience.

Feed one validation loss per evaluation with the step it was measured at. A fit may stop once
``patience`` steps have passed without an improvement AND at least ``min_steps`` steps have run:
the floor keeps a fit from ending while BatchNorm statistics and the first epochs still make the
validation loss rise (the knife edge that ended the demo's real arm after 28 steps at chance).
Epoch budgets use the same class with positions in steps and patience = epochs x steps per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    patience: int  # steps without an improvement (by more than min_delta) before stopping
    min_delta: float = 0.0
    min_steps: int = 0  # no stop before this step
    best_loss: float = math.inf
    best_step: int = -1  # -1: no finite validation loss seen yet
    history: list[tuple[int, float]] = field(default_factory=list)

    def step(self, val_loss: float, at: int) -> bool:
        """Record ``val_loss`` measured after step ``at``; True when it improves on the best by more than min_delta."""
        self.history.append((int(at), float(val_loss)))
        if math.isfinite(val_loss) and val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step = float(val_loss), int(at)
            return True
        return False

    @property
    def last_step(self) -> int:
        return self.history[-1][0] if self.history else 0

    @property
    def should_stop(self) -> bool:
        if not self.history or self.last_step < self.min_steps:
            return False
        since = self.last_step - (self.best_step if self.best_step >= 0 else 0)
        return since >= self.patience
