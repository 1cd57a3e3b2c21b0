"""Architecture sizes of the model: one frozen dataclass, serialised into every .lottery header.

Defaults are the reference configuration of METHOD.md section 2. Nothing else in the code base
hard-codes these numbers. Also here, because the header reader needs them and must not import
torch (`lottery info` stays fast): the learned modules' names and parameter layouts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Architecture:
    n_levels: int = 7  # latent grids at 1, 1/2, ..., 1/2**(n_levels-1) resolution
    latent_gain: float = 16.0  # parameters are multiplied by this before quantization
    upsample_kernel: int = 8  # transposed-convolution kernel size (stride 2)
    modnet_hidden: int = 48  # channels of U0
    modnet_out: int = 3  # channels of U1, U2, U3
    synth_hidden: tuple[int, int, int] = (32, 24, 16)  # widths of the three hidden synthesis layers
    arm_hidden: int = 24  # ARM hidden width (context size is fixed at 24 neighbours)
    arm_band_rows: int = 0  # ARM contexts stop every this many rows, for a faster decoder (0 = never)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["synth_hidden"] = list(self.synth_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture keys: {sorted(unknown)}")
        d = dict(d)
        if "synth_hidden" in d:
            d["synth_hidden"] = tuple(int(v) for v in d["synth_hidden"])
        return cls(**d)

    # Derived sizes -------------------------------------------------------------------------
    @property
    def modulation_channels(self) -> tuple[int, int, int]:
        """Channels of M1 = [U3,U2], M2 = [U3,U2,U1], M3 = [U3,U2,U1,U0]."""
        o = self.modnet_out
        return (2 * o, 3 * o, 3 * o + self.modnet_hidden)

    @property
    def synth_layer_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of the four bias-free synthesis layers, in order."""
        h1, h2, h3 = self.synth_hidden
        m1, m2, m3 = self.modulation_channels
        return [(h1, 2), (h2, h1 + m1), (h3, h2 + m2), (3, h3 + m3)]

    @property
    def n_synth_weights(self) -> int:
        return sum(o * i for o, i in self.synth_layer_shapes)


MODULE_NAMES = ("arm", "upsampling", "modnet")  # the small learned networks, in file order
ARM_CONTEXT_SIZE = 24  # causal neighbours fed to the ARM (fixed by the method, METHOD.md section 2)
MAX_ARM_HIDDEN = 32  # exactness bound of the fixed-point ARM (codec.arm: sums of <= 32 products < 2**53)


def module_layout(name: str, arch: Architecture) -> list[tuple[str, tuple[int, ...]]]:
    """Canonical (parameter name, shape) list of one learned module, in storage order."""
    if name == "arm":
        h = arch.arm_hidden
        return [
            ("fc1.weight", (h, ARM_CONTEXT_SIZE)),
            ("fc1.bias", (h,)),
            ("fc2.weight", (h, h)),
            ("fc2.bias", (h,)),
            ("fc3.weight", (2, h)),
            ("fc3.bias", (2,)),
        ]
    if name == "upsampling":
        k = arch.upsample_kernel
        return [("kernel", (k, k))]
    if name == "modnet":
        hid, out = arch.modnet_hidden, arch.modnet_out
        return [
            ("u0.weight", (hid, arch.n_levels)),
            ("u0.bias", (hid,)),
            ("u1.weight", (out, hid)),
            ("u1.bias", (out,)),
            ("u2.weight", (out, out, 3, 3)),
            ("u2.bias", (out,)),
            ("u3.weight", (out, out, 3, 3)),
            ("u3.bias", (out,)),
        ]
    raise ValueError(f"unknown module {name!r} (expected one of {MODULE_NAMES})")
