"""B fits held as one model: every parameter of B `LotteryModel`s stacked on a leading member axis.

Why: on a GPU a fitting step is ~1,500 small kernel launches whatever the image size, so the GPU
idles; with the members stacked, each operation of a step serves all of them, one launch for B
members (a restoration ensemble, `restoration.ensemble`). Each member keeps its own seed (random
synthesis weights), mask scores, latents, networks and quantization-noise generator, and no
operation mixes members, so a member's numbers do not depend on which others share its batch.

The forward pass is `LotteryModel`'s, written with batched products and grouped convolutions and
differentiated by autograd (no hand-written backwards: those are tuned for a CPU, where a batched
model is slower per member than one fit per core, docs/design.md). Parameters are kept under the
single model's `state_dict` names, so members move in and out of `LotteryModel`s exactly
(`from_models`, `write_member`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import device_policy
from .arm import _KH, _KW, CONTEXT_SIZE, _canvas, _tap_index, laplace_bits
from .latents import kumaraswamy_noise, soft_round
from .lottery_model import LotteryModel
from .synthesis import pixel_coordinates
from .upsampling import _polyphase_gather


def _key(name: str) -> str:
    return name.replace(".", "/")


class MemberBatch(nn.Module):
    """Members of equal image size, architecture and mask ratio (their seeds differ)."""

    def __init__(self, models: list[LotteryModel]):
        super().__init__()
        if not models:
            raise ValueError("a member batch needs at least one model")
        first = models[0]
        for m in models[1:]:
            if (m.height, m.width, m.arch, m.mask_ratio) != (first.height, first.width, first.arch, first.mask_ratio):
                raise ValueError("members of a batch must share image size, architecture and mask ratio")
        self.height, self.width, self.arch = first.height, first.width, first.arch
        self.mask_ratio, self.gain = first.mask_ratio, first.latents.gain
        self.seeds = [m.seed for m in models]
        self.names = [name for name, _ in first.named_parameters()]
        self.params = nn.ParameterDict({
            _key(name): nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in models]).clone())
            for name in self.names
        })
        self.register_buffer("w0", torch.stack([m.synthesis.w0_flat for m in models]))
        self.register_buffer("coords", pixel_coordinates(self.height, self.width).to(first.coords))
        self.shapes = first.latents.shapes
        # each member's own noise generator, seeded as its model's: the same draws as a single fit
        self.noise_seeds = [m.latents.noise_seed for m in models]
        self._generators: list[torch.Generator] | None = None

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    def p(self, name: str) -> torch.Tensor:
        return self.params[_key(name)]

    def write_member(self, k: int, model: LotteryModel) -> None:
        """Copy member k's parameters into `model` (a LotteryModel of the same member)."""
        own = dict(model.named_parameters())
        with torch.no_grad():
            for name in self.names:
                own[name].copy_(self.p(name)[k])

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        return {name: self.p(name)[k].detach().clone() for name in self.names}

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name in self.names:
                self.p(name)[k].copy_(state[name])

    def keep(self, indices: list[int]) -> dict[nn.Parameter, nn.Parameter]:
        """Keep these members only (in this order); returns each old parameter's replacement so
        an optimizer can carry its state over. Noise generators go on from where they were."""
        index = torch.tensor(indices, dtype=torch.long, device=self.w0.device)
        renamed = {}
        for name in self.names:
            old = self.p(name)
            new = nn.Parameter(old.detach().index_select(0, index))
            self.params[_key(name)] = new
            renamed[old] = new
        self.w0 = self.w0.index_select(0, index)
        self.seeds = [self.seeds[i] for i in indices]
        self.noise_seeds = [self.noise_seeds[i] for i in indices]
        if self._generators is not None:
            self._generators = [self._generators[i] for i in indices]
        return renamed

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """As `LotteryModel.parameter_groups`: latents, mask scores, the small networks."""
        groups: dict[str, list[nn.Parameter]] = {"latents": [], "scores": [], "networks": []}
        for name in self.names:
            kind = "latents" if name.startswith("latents.") else "scores" if name == "synthesis.scores" else "networks"
            groups[kind].append(self.p(name))
        return groups

    # -- quantization proxies ----------------------------------------------------------------------
    def _noise(self, shape: tuple[int, int], a: float, device: torch.device) -> torch.Tensor:
        if self._generators is None or self._generators[0].device != device:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.noise_seeds]
        return torch.stack([kumaraswamy_noise(shape[1:], a, generator=g, device=device) for g in self._generators])

    def proxies(self, mode: str, temperature: float = 0.3, noise_a: float = 1.0):
        """`LatentGrids.proxies` for every member: lists of (B, h, w) grids (rate, synthesis)."""
        y = torch.cat([self.p(f"latents.grids.{i}").reshape(self.n_members, -1) for i in range(len(self.shapes))], 1)
        y = y * self.gain
        if mode == "hard":
            q = self._split(y + (torch.round(y) - y).detach())
            return q, q
        noisy = soft_round(y, temperature) + self._noise(tuple(y.shape), noise_a, y.device)
        return self._split(noisy), self._split(soft_round(noisy, temperature))

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        parts = flat.split([h * w for h, w in self.shapes], 1)
        return [v.reshape(-1, h, w) for v, (h, w) in zip(parts, self.shapes)]

    # -- render ------------------------------------------------------------------------------------
    def upsample(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """(B, n_levels, H*W): `Upsampling.forward` per member (coarsest level first)."""
        kernel = self.p("upsampling.kernel")
        b, size = kernel.shape[0], kernel.shape[-1]
        index, valid, before, after = _polyphase_gather(size)
        index, valid = index.to(kernel.device), valid.to(kernel.device)
        taps = before + after + 1
        w = torch.where(valid, kernel.reshape(b, -1)[:, index], kernel.new_zeros(()))  # (B, 4, T*T)
        x = grids[-1][:, None]
        for level in range(len(grids) - 2, -1, -1):
            h, wd = grids[level].shape[-2:]
            c, hi, wi = x.shape[1:]
            xp = F.pad(x, (before, after, before, after)).reshape(1, b * c, hi + taps - 1, wi + taps - 1)
            weight = w[:, None].expand(b, c, 4, taps * taps).reshape(b * c * 4, 1, taps, taps)
            y = F.conv2d(xp, weight, groups=b * c).reshape(b * c, 4, hi, wi)
            up = F.pixel_shuffle(y, 2).reshape(b, c, 2 * hi, 2 * wi)[:, :, :h, :wd]
            x = torch.cat([up, grids[level][:, None]], 1)
        return x.reshape(b, len(grids), -1)

    def _conv3x3(self, x: torch.Tensor, name: str) -> torch.Tensor:
        b, c, _ = x.shape
        weight, bias = self.p(f"modnet.{name}.weight"), self.p(f"modnet.{name}.bias")
        out = F.conv2d(x.reshape(1, b * c, self.height, self.width), weight.reshape(-1, c, 3, 3),
                       bias.reshape(-1), padding=1, groups=b)
        return out.reshape(b, -1, self.n_pixels)

    def modnet(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`ModNet.forward` per member: the blocks ([U3, U2], U1, U0), each (B, C, H*W)."""
        p, gelu = self.p, F.gelu
        u0 = gelu(torch.baddbmm(p("modnet.u0.bias")[..., None], p("modnet.u0.weight"), features))
        u1 = gelu(torch.baddbmm(p("modnet.u1.bias")[..., None], p("modnet.u1.weight"), u0))
        u2 = gelu(self._conv3x3(u1, "u2") + u1)
        u3 = gelu(self._conv3x3(u2, "u3") + u2)
        return torch.cat([u3, u2], 1), u1, u0

    def masked_weights(self) -> list[torch.Tensor]:
        """W0 * mask per member, (B, out, in) per layer, the mask's gradient passed to the scores."""
        scores = self.p("synthesis.scores")
        b, n = scores.shape
        keep = n - int(round(self.mask_ratio * n))
        hard = torch.zeros_like(scores)
        if keep > 0:
            hard.scatter_(1, torch.topk(scores.detach(), keep, dim=1, sorted=False).indices, 1.0)
        weights = self.w0 * (hard + (scores - scores.detach()))
        out, pos = [], 0
        for fan_out, fan_in in self.arch.synth_layer_shapes:
            out.append(weights[:, pos: pos + fan_out * fan_in].reshape(b, fan_out, fan_in))
            pos += fan_out * fan_in
        return out

    def synthesis(self, modulations: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`MaskedSynthesis.forward` per member over every pixel -> (B, 3, H*W)."""
        w1, w2, w3, w4 = self.masked_weights()
        blk_a, blk_b, blk_c = modulations
        na, nb = blk_a.shape[1], blk_b.shape[1]
        h1, h2, h3 = self.arch.synth_hidden
        gelu = F.gelu
        from_a = torch.cat([w2[:, :, h1:], w3[:, :, h2: h2 + na], w4[:, :, h3: h3 + na]], 1) @ blk_a
        from_b = torch.cat([w3[:, :, h2 + na:], w4[:, :, h3 + na: h3 + na + nb]], 1) @ blk_b
        from_c = w4[:, :, h3 + na + nb:] @ blk_c
        a2, a3, a4 = torch.split(from_a, [h2, h3, 3], 1)
        b3, b4 = torch.split(from_b, [h3, 3], 1)
        h = gelu(w1 @ self.coords)
        h = gelu(torch.baddbmm(a2, w2[:, :, :h1], h))
        h = gelu(torch.baddbmm(a3 + b3, w3[:, :, :h2], h))
        v = torch.baddbmm(a4 + b4 + from_c, w4[:, :, :h3], h)
        return (torch.tanh(v) + 1) * 0.5

    def render_from(self, synth_latents: list[torch.Tensor]) -> torch.Tensor:
        """Latent values -> images (B, 3, H, W)."""
        image = self.synthesis(self.modnet(self.upsample(synth_latents)))
        return image.reshape(self.n_members, 3, self.height, self.width)

    # -- rate --------------------------------------------------------------------------------------
    def rate_bits(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """`Arm.rate_bits` per member (bands as there) -> bits (B,)."""
        p = self.p
        w1, b1 = p("arm.fc1.weight"), p("arm.fc1.bias")
        b, hidden = w1.shape[0], w1.shape[1]
        eye = torch.eye(hidden, dtype=w1.dtype, device=w1.device)
        w1res = w1 + eye if hidden == CONTEXT_SIZE else w1
        kernel = w1.new_zeros(b, hidden, _KH * _KW).index_copy(2, _tap_index(w1.device), w1res)
        kernel = kernel.reshape(b * hidden, 1, _KH, _KW)
        w2res = p("arm.fc2.weight") + eye

        def outputs(xpad: torch.Tensor) -> torch.Tensor:
            """(B, h + 4, w + 8) padded grids -> (B, 2, h * w): (mu, log_scale) of every position."""
            a1 = F.conv2d(xpad[None], kernel, b1.reshape(-1), groups=b).reshape(b, hidden, -1)
            h2 = F.gelu(torch.baddbmm(p("arm.fc2.bias")[..., None], w2res, F.gelu(a1)))
            return torch.baddbmm(p("arm.fc3.bias")[..., None], p("arm.fc3.weight"), h2)

        band_rows = self.arch.arm_band_rows
        grids = [g for grid in latents for g in (grid.split(band_rows, 1) if 0 < band_rows < grid.shape[1] else (grid,))
                 if g[0].numel()]
        values = torch.cat([g.reshape(b, -1) for g in grids], 1)
        if device_policy.launch_bound(values):  # every grid in one canvas, as `Arm._packed_rate_bits`
            rows, width, place, pick = _canvas(tuple(tuple(g.shape[1:]) for g in grids), values.device)
            canvas = values.new_zeros(b, rows * width).index_copy(1, place, values).view(b, rows, width)
            out = outputs(canvas).index_select(2, pick)
        else:
            out = torch.cat([outputs(F.pad(g, (4, 4, 4, 0))) for g in grids], 2)
        return laplace_bits(values, out[:, 0], out[:, 1]).sum(1)

    def forward(self, mode: str = "hard", temperature: float = 0.3, noise_a: float = 1.0):
        """(images (B, 3, H, W), latent bits (B,)) under a quantization proxy, as `LotteryModel`."""
        rate_in, synth_in = self.proxies(mode, temperature, noise_a)
        return self.render_from(synth_in), self.rate_bits(rate_in)
