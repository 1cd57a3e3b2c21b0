"""The whole model: latents -> upsampling -> ModNet -> masked random synthesis, plus the ARM.

`LotteryModel` is the trainable float32 model used while fitting; `to_payload` turns its
quantized state into a `Payload`, and `model_from_payload` turns a payload back into a model.
Rendering a payload exactly (the decoder) is `exact_render`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .architecture import MODULE_NAMES, Architecture
from .arm import Arm
from .bands import fit_band_rows
from .exact_render import HALO_ROWS
from .latents import LatentGrids
from .modulation import ModNet
from .payload import Payload, QuantizedModule
from .synthesis import MaskedSynthesis, pixel_coordinates
from .upsampling import Upsampling


class LotteryModel(nn.Module):
    def __init__(self, height: int, width: int, arch: Architecture, seed: int, mask_ratio: float):
        super().__init__()
        if arch.arm_band_rows >= height:  # one band per grid: the same code, written as "no bands"
            arch = replace(arch, arm_band_rows=0)
        self.height, self.width = height, width
        self.arch, self.seed, self.mask_ratio = arch, seed, mask_ratio
        self.latents = LatentGrids(height, width, arch.n_levels, arch.latent_gain, noise_seed=seed)
        self.upsampling = Upsampling(arch.upsample_kernel)
        self.modnet = ModNet(arch)
        self.synthesis = MaskedSynthesis(arch, seed, mask_ratio)
        self.arm = Arm(arch.arm_hidden)
        self.register_buffer("coords", pixel_coordinates(height, width))
        self.band_rows = 0
        self.set_band_rows(fit_band_rows(height, width))

    def set_band_rows(self, rows: int) -> None:
        """Render and fit in bands of `rows` rows (0: whole); tests use it on small images."""
        self.band_rows = rows
        self.synthesis.cache_first_layer = len(self.row_bands()) == 1

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    def modules_by_name(self) -> dict[str, nn.Module]:
        return {"arm": self.arm, "upsampling": self.upsampling, "modnet": self.modnet}

    def render_from(self, synth_latents: list[torch.Tensor], pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Latent values (level 0 first) -> image (3, H, W) in [0, 1], or with `pixels` (flat
        indices into H*W) only those pixels, as (3, len(pixels)).

        Why `pixels`: when the loss reads only some pixels (inpainting's observed ones), the
        per-pixel synthesis, most of a step's work, runs on those alone. Upsampling and ModNet still
        cover the whole image (the 3x3 ModNet layers need every neighbour), so the values at the
        chosen pixels are those of the full render.
        """
        bands = self.row_bands()
        if len(bands) > 1 and not torch.is_grad_enabled():  # nothing kept for a backward: band by band
            return self._render_in_bands(synth_latents, bands, pixels)
        return self.render_features(self.upsampling(synth_latents), pixels)

    def render_features(self, features: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """`render_from` after the upsampling, from its output `features` (n_levels, H, W): ModNet
        and the synthesis. Why: a search over ModNet's quantization renders many times from the
        same upsampled latents (`compression.quantize`)."""
        features = features.reshape(self.arch.n_levels, -1)
        modulations = self.modnet(features, self.height, self.width)
        if pixels is None:
            return self.synthesis(self.coords, modulations).view(3, self.height, self.width)
        chosen = tuple(m.index_select(1, pixels) for m in modulations)
        return self.synthesis(self.coords, chosen, pixels)

    def row_bands(self) -> list[tuple[int, int]]:
        """The bands of rows [a, b) this model renders and fits in (`fit_band_rows`)."""
        step = self.band_rows if 0 < self.band_rows < self.height else self.height
        return [(a, min(self.height, a + step)) for a in range(0, self.height, step)]

    def band_bounds(self, pixels: torch.Tensor, bands: list[tuple[int, int]]) -> list[int]:
        """Where each band's pixels start and end in the sorted flat `pixels`: band i holds
        pixels[bounds[i]:bounds[i + 1]]."""
        starts = torch.tensor([a * self.width for a, _ in bands] + [self.n_pixels], device=pixels.device)
        return torch.searchsorted(pixels, starts).tolist()

    def render_rows(self, synth_latents: list[torch.Tensor], a: int, b: int,
                    pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Rows [a, b) of the render as (3, (b - a) * W), or with `pixels` (sorted flat indices into
        H*W, all inside those rows) only those pixels, (3, len(pixels)); differentiable.

        The same values as those rows of `render_from`, computed from the latent rows they depend
        on: the upsampled latents and ModNet of the rows plus HALO_ROWS above and below (the two
        3x3 layers), then the synthesis of the band's pixels.
        """
        h, w = self.height, self.width
        fa, fb = max(0, a - HALO_ROWS), min(h, b + HALO_ROWS)
        features = self.upsampling.rows(synth_latents, fa, fb).reshape(self.arch.n_levels, -1)
        modulations = self.modnet(features, fb - fa, w)
        if pixels is None:
            pixels = torch.arange(a * w, b * w, device=features.device)
        local = pixels - fa * w
        return self.synthesis(self.coords, tuple(m.index_select(1, local) for m in modulations), pixels)

    def _render_in_bands(self, synth_latents: list[torch.Tensor], bands: list[tuple[int, int]],
                         pixels: torch.Tensor | None) -> torch.Tensor:
        """`render_from` without gradients, a band of rows at a time (`pixels` sorted)."""
        if pixels is None:
            out = self.coords.new_empty(3, self.height, self.width)
            for a, b in bands:
                out[:, a:b] = self.render_rows(synth_latents, a, b).view(3, b - a, self.width)
            return out
        out = self.coords.new_empty(3, pixels.numel())
        bounds = self.band_bounds(pixels, bands)
        for (a, b), lo, hi in zip(bands, bounds, bounds[1:]):
            if hi > lo:
                out[:, lo:hi] = self.render_rows(synth_latents, a, b, pixels[lo:hi])
        return out

    def forward(self, mode: str = "hard", temperature: float = 0.3, noise_a: float = 1.0,
                pixels: torch.Tensor | None = None):
        """(image (3, H, W), latent rate in bits) under the given quantization proxy; with `pixels`
        the image part is (3, len(pixels)) (see `render_from`)."""
        rate_in, synth_in = self.latents.proxies(mode, temperature, noise_a)
        return self.render_from(synth_in, pixels), self.arm.rate_bits(rate_in, self.arch.arm_band_rows)

    # -- parameter groups for the optimiser ------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "latents": list(self.latents.parameters()),
            "scores": [self.synthesis.scores],
            "networks": [p for m in self.modules_by_name().values() for p in m.parameters()],
        }

    # -- quantization ----------------------------------------------------------------------------
    def quantize_module(self, name: str, shift: int, shifts: dict[str, int] | None = None) -> QuantizedModule:
        """Round one small network's parameters to integers * 2**-shift (names as state_dict);
        `shifts` gives some tensors their own shift."""
        module = self.modules_by_name()[name]
        q = QuantizedModule(shift=shift, shifts=dict(shifts or {}))
        q.tensors = {k: torch.round(v.detach().double() * 2.0 ** q.shift_of(k)).to(torch.int64)
                     for k, v in module.state_dict().items()}
        return q

    def load_quantized(self, name: str, qmodule: QuantizedModule) -> None:
        module = self.modules_by_name()[name]
        values = qmodule.dequantized()
        with torch.no_grad():
            for k, v in module.state_dict(keep_vars=True).items():
                v.copy_(values[k].to(v.dtype))

    def to_payload(self, modules: dict[str, QuantizedModule]) -> Payload:
        return Payload(
            height=self.height,
            width=self.width,
            seed=self.seed,
            mask_ratio=self.mask_ratio,
            architecture=self.arch,
            mask=self.synthesis.mask().cpu(),
            modules={name: modules[name] for name in MODULE_NAMES},
            latents=[q.cpu() for q in self.latents.quantized()],
        )


def model_from_payload(payload: Payload) -> LotteryModel:
    """A float model carrying the payload's values (e.g. to continue fitting or inspect)."""
    model = LotteryModel(payload.height, payload.width, payload.architecture, payload.seed, payload.mask_ratio)
    for name in MODULE_NAMES:
        model.load_quantized(name, payload.modules[name])
    model.latents.set_from_integers(payload.latents)
    # Scores equal to the mask and a ratio matching its exact count make topk_mask reproduce it.
    mask = payload.mask.to(torch.bool)
    with torch.no_grad():
        model.synthesis.scores.copy_(mask.to(model.synthesis.scores.dtype))
    model.synthesis.mask_ratio = 1.0 - float(mask.sum()) / mask.numel()
    return model
