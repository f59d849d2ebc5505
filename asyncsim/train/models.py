"""Small functional models: ``linear``, ``mlp[:H1,H2,...]`` (ReLU) and ``cnn[:C]`` (for 8×8 images).

A model is a list of parameter shapes plus pure forward functions over a list of tensors, so
the trainer can bind the tensors as views of one flat master vector (one autograd leaf per
tensor) for the sequential reference, and as stacked ``(B, *shape)`` tensors for batched
gradients (hand-batched ``baddbmm`` for linear/MLP, ``torch.func.vmap`` for the CNN).
Initialisation is PyTorch's default (uniform ±1/√fan_in) drawn from a numpy generator keyed by
the seed, so it is the same on every device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

MODELS = ("linear", "mlp", "cnn")


@dataclass
class ModelSpec:
    """Architecture of a functional model (see module docstring)."""

    kind: str
    input_shape: tuple[int, ...]
    n_out: int
    hidden: tuple[int, ...] = ()
    channels: int = 8
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self):
        n_in = int(np.prod(self.input_shape))
        if self.kind in ("linear", "mlp"):
            sizes = [n_in, *self.hidden, self.n_out]
            self.shapes = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                self.shapes += [(b, a), (b,)]
        elif self.kind == "cnn":
            if len(self.input_shape) == 3:
                c, h, w = self.input_shape
            else:
                side = int(round(np.sqrt(n_in)))
                if side * side != n_in:
                    raise InputError(f"cnn needs image inputs (C, H, W) or a square number of "
                                     f"features, got {n_in}")
                c, h, w = 1, side, side
                self.input_shape = (1, side, side)
            if h % 2 or w % 2:
                raise InputError(f"cnn needs even image sides, got {h}x{w}")
            k = self.channels
            self.shapes = [(k, c, 3, 3), (k,), (self.n_out, k * (h // 2) * (w // 2)), (self.n_out,)]
        else:  # pragma: no cover - parse_model guards
            raise InputError(f"unknown model kind {self.kind!r}")

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    @property
    def name(self) -> str:
        if self.kind == "mlp":
            return "mlp:" + ",".join(map(str, self.hidden))
        if self.kind == "cnn":
            return f"cnn:{self.channels}"
        return self.kind

    def init(self, seed: int) -> np.ndarray:
        """Flat float64 initial parameters (PyTorch's default uniform ±1/√fan_in)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1A17]))
        out = []
        for i in range(0, len(self.shapes), 2):
            w = self.shapes[i]
            fan_in = int(np.prod(w[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            out.append(rng.uniform(-bound, bound, size=int(np.prod(w))))
            out.append(rng.uniform(-bound, bound, size=int(np.prod(self.shapes[i + 1]))))
        return np.concatenate(out)

    # ------------------------------------------------------------------ forward
    def forward(self, params, X):
        """Outputs (n, n_out) for one parameter set (list of tensors) and inputs X (n, ...)."""
        import torch.nn.functional as F

        if self.kind == "cnn":
            h = X.reshape(X.shape[0], *self.input_shape)
            h = F.max_pool2d(F.relu(F.conv2d(h, params[0], params[1], padding=1)), 2)
            return F.linear(h.flatten(1), params[2], params[3])
        h = X.reshape(X.shape[0], -1)
        n_layers = len(params) // 2
        for i in range(n_layers):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if i < n_layers - 1:
                h = F.relu(h)
        return h

    def forward_batched(self, params, X):
        """Outputs (B, n, n_out) for stacked parameters (list of (B, *shape)) and X (B, n, ...).

        Linear/MLP: hand-batched ``baddbmm`` (measured faster than ``vmap`` on CPU);
        CNN: ``torch.func.vmap`` of :meth:`forward`."""
        import torch

        if self.kind == "cnn":
            from torch.func import vmap

            return vmap(self.forward)(list(params), X)
        # Feature-major activations (B, features, n): z = b + W h, so the gradient of each W
        # comes out of autograd as a contiguous (B, out, in) tensor (with h @ W^T it came
        # out transposed and cost an extra copy of every weight gradient).
        h = X.reshape(X.shape[0], X.shape[1], -1).transpose(1, 2)
        n_layers = len(params) // 2
        for i in range(n_layers):
            W, b = params[2 * i], params[2 * i + 1]
            h = torch.baddbmm(b.unsqueeze(2), W, h)
            if i < n_layers - 1:
                h = torch.relu(h)
        return h.transpose(1, 2)


def parse_model(spec: str | None, input_shape: tuple[int, ...], n_out: int) -> ModelSpec:
    """``linear`` | ``mlp`` (hidden 64) | ``mlp:128`` | ``mlp:256,256`` | ``cnn`` | ``cnn:16``."""
    if spec is None:
        spec = "mlp:64"
    if not isinstance(spec, str):
        raise InputError(f"model must be a string like 'mlp:128', got {spec!r}")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    try:
        nums = tuple(int(a) for a in arg.split(",") if a.strip()) if arg else ()
    except ValueError:
        raise InputError(f"bad model spec {spec!r}: sizes must be integers, e.g. 'mlp:256,256'") from None
    if any(n < 1 for n in nums):
        raise InputError(f"bad model spec {spec!r}: sizes must be >= 1")
    if kind == "linear":
        if nums:
            raise InputError(f"bad model spec {spec!r}: linear takes no sizes")
        return ModelSpec("linear", tuple(input_shape), n_out)
    if kind == "mlp":
        return ModelSpec("mlp", tuple(input_shape), n_out, hidden=nums or (64,))
    if kind == "cnn":
        if len(nums) > 1:
            raise InputError(f"bad model spec {spec!r}: cnn takes one size (channels)")
        return ModelSpec("cnn", tuple(input_shape), n_out, channels=nums[0] if nums else 8)
    raise InputError(f"unknown model {spec!r} (use linear, mlp[:H,...] or cnn[:C])")
