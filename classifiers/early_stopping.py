"""Early stopping on validation loss: remember the best epoch, stop after ``patience`` without gain."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    """Feed one validation loss per epoch to ``step``; it says whether this epoch is the new best."""

    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[float] = field(default_factory=list)

    def step(self, val_loss: float) -> bool:
        """Record ``val_loss`` for the next epoch; True when it improves on the best by more than min_delta."""
        epoch = len(self.history)
        self.history.append(float(val_loss))
        if math.isfinite(val_loss) and val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch = float(val_loss), epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience
