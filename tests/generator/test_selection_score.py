"""Selection's score on hand-made candidates: differences inside the standard error are ties (the preferred
candidate wins), and copies of the real seed images lose to fresh images of equal label agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.generator.select_score import (choose, images_needed, per_image_components, real_class_statistics,
                                             real_spacing, score_with_se)
from pipeline.generator.selection import precision_warnings, score_images
from pipeline.generator.synthesis import RealSample

CLASSES = 4
SIZE = 16


def draw(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose brightness depends on the class: one distribution per class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    base = (40 + 50 * labels).view(-1, 1, 1, 1).float()
    images = (base + 30 * torch.randn(len(labels), 1, SIZE, SIZE, generator=g)).clamp(0, 255).round()
    return images.to(torch.uint8), labels


class PixelReference:
    """A stand-in reference that predicts the class written in pixel (0, 0) (so a test sets each verdict)."""

    class_names = [f"c{i}" for i in range(CLASSES)]

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        return np.eye(CLASSES)[images[:, 0, 0, 0].long().numpy() % CLASSES]

    def out_of_fold_proba(self, images: torch.Tensor, seeds: list) -> np.ndarray:
        return self.predict_proba(images)


def context(real: RealSample) -> dict:
    return {"real": real, "real_stats": real_class_statistics(real, CLASSES), "spacing": real_spacing(real),
            "reference": PixelReference()}


def with_verdicts(images: torch.Tensor, labels: torch.Tensor, wrong: int) -> torch.Tensor:
    """Write each image's verdict into pixel (0, 0): the first ``wrong`` images of class 0 are misjudged."""
    out = images.clone()
    verdict = labels.clone()
    verdict[torch.nonzero(labels == 0).flatten()[:wrong]] = 1
    out[:, 0, 0, 0] = verdict.to(torch.uint8)
    return out


def test_a_cas_difference_inside_the_standard_error_is_a_tie_and_the_preferred_candidate_wins() -> None:
    images, labels = draw(10, seed=1)
    real = RealSample(images, labels, [f"r{i}" for i in range(len(labels))])
    fresh, fresh_labels = draw(8, seed=2)
    ctx = context(real)
    low = {"guidance_scale": 1.0, **score_images(with_verdicts(fresh, fresh_labels, 1), fresh_labels.tolist(),
                                                 None, ctx, 0.1, 0)}
    high = {"guidance_scale": 2.0, **score_images(with_verdicts(fresh, fresh_labels, 0), fresh_labels.tolist(),
                                                  None, ctx, 0.1, 0)}
    assert high["cas"] - low["cas"] == pytest.approx(1 / 8 / CLASSES)  # one image of 32: 0.031 > tolerance 0.03
    assert high["score"] - low["score"] > 0.03
    assert high["se"] > 0.03 and low["se"] > 0.03  # 8 images per class cannot resolve 0.03
    chosen, annotated = choose([high, low], 0.03, prefer=lambda c: c["guidance_scale"])
    assert chosen["guidance_scale"] == 1.0  # tied within the SE: the preferred (lower guidance) wins
    assert all(c["tied"] and c["margin"] > 0.03 for c in annotated)
    needed = images_needed(annotated, 0.03)
    assert needed is not None and needed > 8
    assert f"About {needed} images per class" in precision_warnings(annotated, 0.03, 8)[0]
    # with an SE well under the difference the better candidate wins: the margin is the SE, not a constant
    sharp, _ = choose([{**high, "se": 0.001}, {**low, "se": 0.001}], 0.0, prefer=lambda c: c["guidance_scale"])
    assert sharp["guidance_scale"] == 2.0


def test_copies_of_the_real_seeds_lose_to_fresh_images_of_equal_agreement() -> None:
    images, labels = draw(24, seed=3)
    real = RealSample(images, labels, [f"r{i}" for i in range(len(labels))])
    copies = with_verdicts(images, labels, 0)  # every real image once, verdict pixel aside: gap ~0, novelty ~0
    real_verdicts = RealSample(copies, labels, real.sha256s)  # the seeds themselves carry the same verdict pixel
    ctx = context(real_verdicts)
    fresh, fresh_labels = draw(24, seed=4)
    fresh = with_verdicts(fresh, fresh_labels, 0)
    copy = {"name": "copies", **score_images(copies, labels.tolist(), list(real.sha256s), ctx, 0.1, 0)}
    new = {"name": "fresh", **score_images(fresh, fresh_labels.tolist(), None, ctx, 0.1, 0)}
    assert copy["cas"] == new["cas"] == 1.0
    assert copy["gap"] < new["gap"]  # the old score, CAS - gap, prefers the copies
    assert copy["cas"] - copy["gap"] > new["cas"] - new["gap"]
    assert copy["novelty"] == 0.0 and new["novelty"] > 0.7
    chosen, annotated = choose([copy, new], 0.03, prefer=lambda c: c["name"] != "copies")  # copies preferred on ties
    assert chosen["name"] == "fresh"
    assert not next(c for c in annotated if c["name"] == "copies")["tied"]


def test_standard_error_is_not_zero_when_every_image_agrees() -> None:
    images, labels = draw(8, seed=5)
    real = RealSample(images, labels, [f"r{i}" for i in range(len(labels))])
    parts = per_image_components(images, labels.tolist(), np.ones(len(labels)), real, real_spacing(real))
    out = score_with_se(parts, real_class_statistics(real, CLASSES), 0.1, seed=0)
    assert out["cas"] == 1.0 and out["se_cas"] > 0.04  # binomial floor: 8 agreeing images are not certainty
    assert out["images_per_class"] == 8
