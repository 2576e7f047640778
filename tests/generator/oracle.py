"""A known data distribution with its background at the edge of the data range, and its exact denoiser.

Data (16 x 16, one channel, two classes): each class has a square of foreground (value
``foreground``) in its own half of the image; every other pixel is background at the range edge,
``edge + inward * u`` with one level ``u >= 0`` per image, drawn half-normal with scale 0.15: exactly
-1 (black MRI surroundings) or +1 (white smear background) give or take a per-image offset, like
scans from different machines. The background level is a per-image latent, as global brightness is
in real data: a sampler that pushes it early can not be corrected later, so a bias shows.

The denoiser is the exact posterior mean E[x0 | x_t, class] (quadrature over a fine grid of ``u``;
the "null" label mixes the classes by their posterior probability, so classifier-free guidance acts
as on a trained model), returned as epsilon or v, plus ``error`` times a standard-normal field drawn
per (timestep, label): a trained model's small mistakes, different for the conditional and the
unconditional pass. A sampler that clips every intermediate x0 prediction to [-1, 1] turns that
zero-mean error into a bias at the range edge (the clip only ever moves predictions inwards).
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler

from pipeline.generator.pipeline import ClassConditionalPipeline
from pipeline.generator.sampling import make_sampler

LEVEL_SCALE = 0.15  # scale of the half-normal per-image background offset
GRID = 801


def class_masks(size: int = 16) -> torch.Tensor:
    """(2, size, size) booleans: the foreground square of class 0 (top half) and class 1 (bottom half)."""
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    side, left = size // 4, size // 2 - size // 8
    masks[0, 2:2 + side, left:left + side] = True
    masks[1, size // 2 + 2:size // 2 + 2 + side, left:left + side] = True
    return masks


def background_mask(size: int = 16) -> torch.Tensor:
    """Pixels that are background in both classes."""
    return ~class_masks(size).any(0)


def expected_background(edge: float) -> float:
    """Mean background value of the data: edge + inward * E[u]."""
    return edge - math.copysign(1.0, edge) * LEVEL_SCALE * math.sqrt(2 / math.pi)


class OracleDenoiser(torch.nn.Module):
    def __init__(self, noise: dict, edge: float, foreground: float, error: float, size: int = 16) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        # what ClassConditionalPipeline reads from a UNet2DModel
        self.config = type("Config", (), {"sample_size": size, "in_channels": 1, "num_class_embeds": 3})()
        self.alphas = DDPMScheduler(**noise).alphas_cumprod.double()
        self.prediction_type = noise["prediction_type"]
        self.error, self.foreground = error, foreground
        self.masks = class_masks(size)
        u = torch.linspace(0, 6 * LEVEL_SCALE, GRID, dtype=torch.float64)
        self.levels = edge - math.copysign(1.0, edge) * u  # background value for each grid point
        self.log_prior = torch.log_softmax(-(u**2) / (2 * LEVEL_SCALE**2), 0)

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor):
        a = self.alphas[int(t)]
        alpha, var = a.sqrt(), 1 - a
        xd = x.double()[:, 0]
        x0s, logms = [], []
        for mask in self.masks:
            bg = ~mask
            n = bg.sum()
            s1, s2 = (xd * bg).sum((1, 2)), (xd**2 * bg).sum((1, 2))
            v = self.levels[None]
            log_post = self.log_prior - (s2[:, None] - 2 * alpha * v * s1[:, None] + n * alpha**2 * v**2) / (2 * var)
            fg_term = -(((xd - alpha * self.foreground) ** 2) * mask).sum((1, 2)) / (2 * var)
            logms.append(torch.logsumexp(log_post, 1) + fg_term)
            level = (torch.softmax(log_post, 1) * v).sum(1)
            x0s.append(torch.where(mask, torch.tensor(self.foreground, dtype=torch.float64), level[:, None, None]))
        x0s_t, weights = torch.stack(x0s, 1), torch.softmax(torch.stack(logms, 1), 1)
        uncond = (weights[:, :, None, None] * x0s_t).sum(1)
        labels = class_labels.long()
        cond = x0s_t[torch.arange(len(labels)), labels.clamp(max=1)]
        x0 = torch.where((labels >= 2)[:, None, None], uncond, cond)[:, None]
        eps = (x.double() - alpha * x0) / var.sqrt()
        out = eps if self.prediction_type == "epsilon" else alpha * eps - var.sqrt() * x0
        fields = torch.stack([torch.randn(x.shape[1:], dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(int(t) * 7 + int(lab)))
                              for lab in labels.tolist()])
        return type("Out", (), {"sample": (out + self.error * fields).float()})()


def oracle_generator(prediction_type: str, edge: float, foreground: float, error: float,
                     size: int = 16) -> ClassConditionalPipeline:
    """The oracle denoiser inside the project's pipeline (synthesis swaps in the configured sampler)."""
    noise = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": prediction_type}
    pipe = ClassConditionalPipeline(OracleDenoiser(noise, edge, foreground, error, size), make_sampler("ddim", noise, 10),
                                    class_names=["top", "bottom"], mode="L")
    pipe.set_progress_bar_config(disable=True)
    return pipe
