"""Injectable feature extractors: uint8 images (N, C, H, W) -> float features (N, D).

Any callable with ``name`` and ``label`` attributes works (the tests inject tiny ones). Shipped:

* ``InceptionExtractor``: torchvision's Inception-v3 (ImageNet weights) pool features, 2048-d, the
  network FID is defined on. Weights come from ``quality.inception_weights`` (a local file), torch's hub
  cache, or a download; when none is available (offline: no download works on these machines) it
  raises ``ExtractorUnavailable`` with a note and the stage skips it. These are torchvision's weights,
  not the TF-FID ones, so the values are not comparable with published FIDs; outputs say so.
* ``DomainExtractor``: the penultimate layer of the reference classifier trained on the real 20%
  sample only (the real arm's fold models, ``pipeline.quality.judge``); named "domain features" in every output, never "FID".
* ``pixel_features``: the images themselves in [0, 1], flattened (memorisation in pixel space).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.progress import Progress

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's file name in the hub cache


class ExtractorUnavailable(RuntimeError):
    """The extractor cannot run here (e.g. no weights offline); ``str(exc)`` is the note for the report."""


class FeatureExtractor(Protocol):
    name: str  # short key used in tables: "inception", "domain", ...
    label: str  # what outputs call the Fréchet distance on these features

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


def batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 128,
            name: str | None = None) -> np.ndarray:
    """``fn`` over ``images`` in batches; with a ``name`` it reports progress (pipeline.progress)."""
    outs = []
    report = Progress(name or "", len(images), unit="image", enabled=name is not None)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            outs.append(fn(images[start:start + batch_size]).detach().float().cpu())
            report.update(start + len(outs[-1]))
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Pixels in [0, 1], flattened: the memorisation check's pixel space (images share one size)."""
    return images.reshape(len(images), -1).float().div(255.0).numpy()


class InceptionExtractor:
    name = "inception"
    label = "Fréchet distance, Inception-v3 features (torchvision ImageNet weights; not TF-FID comparable)"

    def __init__(self, weights: str | None = None, allow_download: bool = True, batch_size: int = 32) -> None:
        self.weights = weights
        self.allow_download = allow_download
        self.batch_size = batch_size
        self._model: torch.nn.Module | None = None

    def _state_dict(self) -> dict[str, torch.Tensor]:
        tried = []
        candidates = [Path(self.weights).expanduser()] if self.weights else []
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
        for path in candidates:
            tried.append(str(path))
            if path.is_file():
                return torch.load(path, map_location="cpu", weights_only=True)
        if self.allow_download:
            try:
                from torchvision.models import Inception_V3_Weights

                return Inception_V3_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
            except Exception as exc:  # no network, blocked host, partial file: all mean "not available"
                tried.append(f"download ({type(exc).__name__}: {str(exc)[:80]})")
        raise ExtractorUnavailable(
            "Inception-v3 skipped: no weights available (tried " + "; ".join(tried) + "). The standard FID "
            "needs ImageNet Inception-v3 weights; set quality.inception_weights to a local copy of "
            f"{INCEPTION_FILE} to enable it. The domain-feature metrics are reported instead.")

    def load(self) -> torch.nn.Module:
        if self._model is None:
            from torchvision.models import inception_v3

            model = inception_v3(weights=None, aux_logits=True, init_weights=False)
            model.load_state_dict(self._state_dict())
            model.fc = torch.nn.Identity()
            self._model = model.eval()
        return self._model

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        model = self.load()
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            x = batch.float() / 255.0
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            return model((x - mean) / std)

        return batched(forward, images, self.batch_size, name="inception features")


class DomainExtractor:
    """Penultimate-layer features of a classifier trained on the real 20% sample only.

    ``fold_features(images, folds)`` (the reference's, optional) embeds image ``i`` with fold model
    ``folds[i]`` only: the quality stage uses it so no fold model embeds an image it trained on
    (pipeline.quality.oof). Without it (an injected stand-in) ``__call__`` is all there is.
    """

    name = "domain"
    label = "Fréchet distance, domain features"

    def __init__(self, features: Callable[[torch.Tensor], np.ndarray | torch.Tensor], description: str = "",
                 fold_features: Callable[[torch.Tensor, np.ndarray], np.ndarray] | None = None) -> None:
        self._features = features
        self.description = description
        self.fold_features = fold_features

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        out = self._features(images)
        return out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
