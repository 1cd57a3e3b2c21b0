"""The whole model: latents -> upsampling -> ModNet -> masked random synthesis, plus the ARM.

`LotteryModel` is the trainable float32 model used while fitting. `decode_payload` is the decoder:
it rebuilds everything from a `Payload` and renders with exact fixed-point arithmetic, so it gives
the same pixels on every machine. The encoder calls the same function for its self-check.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .architecture import Architecture
from .arm import Arm
from .latents import LatentGrids
from .modulation import ModNet, modnet_exact_pointwise, modnet_exact_residual
from .params import MODULE_NAMES, Payload, QuantizedModule
from .synthesis import MaskedSynthesis, exact_weights, pixel_coordinates, synthesis_exact
from .upsampling import Upsampling, upsampling_exact


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
        features = self.upsampling(synth_latents).reshape(self.arch.n_levels, -1)
        modulations = self.modnet(features, self.height, self.width)
        if pixels is None:
            return self.synthesis(self.coords, modulations).view(3, self.height, self.width)
        chosen = tuple(m.index_select(1, pixels) for m in modulations)
        return self.synthesis(self.coords, chosen, pixels)

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


DECODE_BLOCK_PIXELS = 16384  # pixels per block of the per-pixel decoder layers (fits in cache)


def decode_payload(payload: Payload, block_pixels: int = DECODE_BLOCK_PIXELS) -> torch.Tensor:
    """Render a payload with exact fixed-point arithmetic -> uint8 image (3, H, W).

    Per-pixel layers run on blocks of `block_pixels` pixels so their wide intermediates (U0 with
    modnet_hidden channels, the synthesis layers with up to 32) stay in cache; only 3-channel maps
    are kept for the whole image.
    The result does not depend on the block size (all sums are exact).
    """
    arch, h, w = payload.architecture, payload.height, payload.width
    n = h * w
    up = payload.modules["upsampling"].dequantized()["kernel"]
    features = upsampling_exact(payload.latents, up).reshape(arch.n_levels, n)
    modnet = payload.modules["modnet"].dequantized()
    weights = exact_weights(arch, payload.seed, payload.mask)
    h3, m2 = arch.synth_hidden[2], arch.modulation_channels[1]
    w4_u0 = weights[3][:, h3 + m2 :]
    blocks = [(a, min(a + block_pixels, n)) for a in range(0, n, block_pixels)]

    u1 = features.new_empty(arch.modnet_out, n)
    from_u0 = features.new_empty(3, n)
    for a, b in blocks:
        u0, u1[:, a:b] = modnet_exact_pointwise(modnet, features[:, a:b])
        from_u0[:, a:b] = w4_u0 @ u0
    u2, u3 = modnet_exact_residual(modnet, u1, h, w)
    small = torch.cat([u3, u2, u1])

    coords = pixel_coordinates(h, w, dtype=torch.float64)
    rgb = features.new_empty(3, n)
    for a, b in blocks:
        rgb[:, a:b] = synthesis_exact(arch, weights, coords[:, a:b], small[:, a:b], from_u0[:, a:b])
    # rgb holds multiples of 2**-16 in [0, 1]: x*255 + 0.5 is exact, so floor gives a portable rounding.
    return torch.floor(rgb.view(3, h, w) * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


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


def macs_per_pixel(arch: Architecture, mask: torch.Tensor, height: int, width: int) -> float:
    """Decoder multiply-accumulates per pixel: synthesis (kept weights), ModNet, upsampling, ARM."""
    synth = float(mask.sum())
    n, hid, out = arch.n_levels, arch.modnet_hidden, arch.modnet_out
    modnet = n * hid + hid * out + 2 * 9 * out * out
    shapes = [(-(-height // (1 << i)), -(-width // (1 << i))) for i in range(n)]
    n_latents = sum(a * b for a, b in shapes)
    k = arch.upsample_kernel
    # each transposed-conv output value takes (k/2)**2 taps; level i is upsampled i times
    up = sum((k // 2) ** 2 * sum(shapes[j][0] * shapes[j][1] for j in range(i)) for i in range(1, n))
    a = arch.arm_hidden
    arm_per_latent = 24 * a + a * a + a * 2
    return synth + modnet + (up + arm_per_latent * n_latents) / (height * width)
