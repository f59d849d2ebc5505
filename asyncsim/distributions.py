"""Time distributions for compute, network latency and server apply times.

Each family is one small frozen pydantic model, selected in scenario files by
its ``dist`` key (a discriminated union, so an unknown family or a parameter
that does not belong to it is an error naming the field). Every family has

* ``sample(rng, n)`` -> ``n`` draws as a float64 array (``rng`` is a
  ``numpy.random.Generator``; nothing touches the global RNG),
* ``mean`` and ``variance`` (exact, possibly ``inf``),
* a readable ``repr`` such as ``Exponential(mean=0.4)``.

All draws are non-negative times in seconds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from ._strict import StrictModel

from ._lazy import lazy_module

np = lazy_module("numpy", __name__)  # validating a scenario needs no numpy (start-up time)

__all__ = [
    "Distribution",
    "Constant",
    "Exponential",
    "ShiftedExponential",
    "LogNormal",
    "Gamma",
    "Uniform",
    "Normal",
    "Weibull",
    "Pareto",
    "Empirical",
    "Mixture",
    "DistributionSpec",
    "parse_distribution",
]


#: Shape bounds where draws stay inside double precision. A gamma or lognormal with a
#: cv above 1000 puts nearly all its mass at 0 in float64, so no feasible sample reaches
#: its mean (a time stop would never arrive); gamma's shape 1/cv² overflows below
#: cv = 1e-154, and 1e-6 already makes it a constant to 12 digits. Weibull and Pareto
#: shapes below 0.05 draw infinities (U**(-1/shape) beyond 1e308) or overflow the mean.
MIN_CV, MAX_CV = 1e-6, 1e3
MIN_SHAPE = 0.05


class Distribution(StrictModel):
    """Base class: a non-negative time distribution (finite parameters, no booleans: asyncsim._strict)."""

    #: ``sample(rng, n)[:k]`` equals ``sample(rng', k)`` from the same state for
    #: every ``k <= n``: each value consumes the generator in sequence, nothing is
    #: drawn ahead for the whole batch (rejection of a batch, mixture labels).
    #: Lets the vectorised engine draw exactly what it needs instead of whole
    #: blocks; tests/test_distributions.py checks every family that claims it.
    prefix_draws: ClassVar[bool] = False

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def mean(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def variance(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def coefficient_of_variation(self) -> float:
        """Coefficient of variation (std / mean)."""
        m = self.mean
        return math.sqrt(self.variance) / m if m > 0 else float("nan")

    def _params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in type(self).model_fields if k not in ("dist", "weight")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__.removesuffix('Component')}({args})"

    __str__ = __repr__


class Constant(Distribution):
    """Always ``value`` seconds."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0, description="The constant time, seconds.")

    def sample(self, rng, n):
        return np.full(n, float(self.value))

    @property
    def mean(self):
        return float(self.value)

    @property
    def variance(self):
        return 0.0


class Exponential(Distribution):
    """Exponential with the given mean (rate 1/mean)."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["exponential"] = "exponential"
    mean_: float = Field(gt=0, alias="mean", description="Mean, seconds.")

    def sample(self, rng, n):
        return rng.exponential(self.mean_, n)

    @property
    def mean(self):
        return float(self.mean_)

    @property
    def variance(self):
        return float(self.mean_) ** 2

    def _params(self):
        return {"mean": self.mean_}


class ShiftedExponential(Distribution):
    """``shift`` plus an exponential; ``mean`` is the mean of the whole (> shift)."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["shifted_exponential"] = "shifted_exponential"
    shift: float = Field(ge=0, description="Minimum time, seconds.")
    mean_: float = Field(gt=0, alias="mean", description="Mean of the whole, seconds (> shift).")

    @model_validator(mode="after")
    def _check(self):
        if not self.mean_ > self.shift:
            raise ValueError(f"mean ({self.mean_}) must be greater than shift ({self.shift})")
        return self

    def sample(self, rng, n):
        return self.shift + rng.exponential(self.mean_ - self.shift, n)

    @property
    def mean(self):
        return float(self.mean_)

    @property
    def variance(self):
        return float(self.mean_ - self.shift) ** 2

    def _params(self):
        return {"shift": self.shift, "mean": self.mean_}


class LogNormal(Distribution):
    """Log-normal parameterised by its mean and coefficient of variation."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["lognormal"] = "lognormal"
    mean_: float = Field(gt=0, alias="mean", description="Mean, seconds.")
    cv: float = Field(ge=0, le=MAX_CV, description="Coefficient of variation (std / mean), at most 1000.")

    def _mu_sigma(self) -> tuple[float, float]:
        s2 = math.log1p(self.cv**2)
        return math.log(self.mean_) - s2 / 2, math.sqrt(s2)

    def sample(self, rng, n):
        mu, sigma = self._mu_sigma()
        return rng.lognormal(mu, sigma, n)

    @property
    def mean(self):
        return float(self.mean_)

    @property
    def variance(self):
        return float(self.cv * self.mean_) ** 2

    def _params(self):
        return {"mean": self.mean_, "cv": self.cv}


class Gamma(Distribution):
    """Gamma parameterised by its mean and coefficient of variation (shape 1/cv²)."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["gamma"] = "gamma"
    mean_: float = Field(gt=0, alias="mean", description="Mean, seconds.")
    cv: float = Field(ge=MIN_CV, le=MAX_CV, description="Coefficient of variation (std / mean), 1e-6 to 1000.")

    def sample(self, rng, n):
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, self.mean_ / shape, n)

    @property
    def mean(self):
        return float(self.mean_)

    @property
    def variance(self):
        return float(self.cv * self.mean_) ** 2

    def _params(self):
        return {"mean": self.mean_, "cv": self.cv}


class Uniform(Distribution):
    """Uniform on [low, high)."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0, description="Lower bound, seconds.")
    high: float = Field(gt=0, description="Upper bound, seconds (> low).")

    @model_validator(mode="after")
    def _check(self):
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self

    def sample(self, rng, n):
        return rng.uniform(self.low, self.high, n)

    @property
    def mean(self):
        return (self.low + self.high) / 2

    @property
    def variance(self):
        return (self.high - self.low) ** 2 / 12


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


class Normal(Distribution):
    """Normal(mean, std) truncated at 0 (conditioned on being >= 0, by rejection).

    ``mean``/``std`` name the normal *before* truncation; the ``mean`` and
    ``variance`` properties give the truncated distribution's exact moments.
    """

    dist: Literal["normal"] = "normal"
    loc: float = Field(gt=0, alias="mean", description="Mean of the normal before truncation at 0, seconds.")
    std: float = Field(gt=0, description="Standard deviation before truncation, seconds.")

    def sample(self, rng, n):
        out = rng.normal(self.loc, self.std, n)
        bad = out < 0
        while bad.any():  # rejection keeps the exact truncated law; acceptance >= 1/2 since loc > 0
            out[bad] = rng.normal(self.loc, self.std, int(bad.sum()))
            bad = out < 0
        return out

    def _z(self) -> tuple[float, float]:
        a = -self.loc / self.std
        return a, 1.0 - _Phi(a)

    @property
    def mean(self):
        a, z = self._z()
        return self.loc + self.std * _phi(a) / z

    @property
    def variance(self):
        a, z = self._z()
        r = _phi(a) / z
        return self.std**2 * (1 + a * r - r * r)

    def _params(self):
        return {"mean": self.loc, "std": self.std}


class Weibull(Distribution):
    """Weibull with shape k and scale λ."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["weibull"] = "weibull"
    shape: float = Field(ge=MIN_SHAPE, description="Shape k (at least 0.05).")
    scale: float = Field(gt=0, description="Scale λ, seconds.")

    def sample(self, rng, n):
        return self.scale * rng.weibull(self.shape, n)

    @property
    def mean(self):
        return self.scale * math.gamma(1 + 1 / self.shape)

    @property
    def variance(self):
        g1 = math.gamma(1 + 1 / self.shape)
        return self.scale**2 * (math.gamma(1 + 2 / self.shape) - g1 * g1)


class Pareto(Distribution):
    """Pareto (type I) with shape α and minimum ``scale``: heavy-tailed stragglers."""

    prefix_draws: ClassVar[bool] = True

    dist: Literal["pareto"] = "pareto"
    shape: float = Field(ge=MIN_SHAPE, description="Tail index α (mean finite for α > 1, variance for α > 2; "
                         "at least 0.05).")
    scale: float = Field(gt=0, description="Minimum value x_m, seconds.")

    def sample(self, rng, n):
        return self.scale * (1.0 + rng.pareto(self.shape, n))

    @property
    def mean(self):
        a = self.shape
        return a * self.scale / (a - 1) if a > 1 else float("inf")

    @property
    def variance(self):
        a = self.shape
        return self.scale**2 * a / ((a - 1) ** 2 * (a - 2)) if a > 2 else float("inf")


class Empirical(Distribution):
    """Resamples measured times uniformly (bootstrap).

    Give ``values`` inline, or ``path`` to a file with one number per line or a
    CSV file with ``column`` (name or 0-based index). A relative ``path`` is
    resolved against the scenario file's folder. Given both, ``values`` win
    (resolved scenarios inline the file's values and keep ``path`` as provenance).
    """

    prefix_draws: ClassVar[bool] = True

    dist: Literal["empirical"] = "empirical"
    values: Optional[tuple[float, ...]] = Field(default=None, description="Measured times, seconds.")
    path: Optional[str] = Field(default=None, description="File of measured times (relative to the scenario).")
    column: Optional[Union[int, str]] = Field(default=None, description="CSV column (name or index) in `path`.")

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any, info: ValidationInfo):
        if not isinstance(data, dict):
            return data
        has_v, has_p = data.get("values") is not None, data.get("path") is not None
        if not (has_v or has_p):
            raise ValueError("give 'values' or 'path'")
        # With both (a resolved scenario keeps the path as provenance), the values win.
        if has_p and not has_v:
            base = (info.context or {}).get("base_dir") if info.context else None
            p = Path(str(data["path"]))
            if not p.is_absolute() and base is not None:
                p = Path(base) / p
            data = {**data, "values": _read_values(p, data.get("column"))}
        return data

    @field_validator("values")
    @classmethod
    def _check_values(cls, v):
        if v is None or len(v) == 0:
            raise ValueError("needs at least one value")
        arr = np.asarray(v, dtype=float)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("values must be finite and >= 0")
        return tuple(float(x) for x in arr)

    def sample(self, rng, n):
        vals = np.asarray(self.values)
        return vals[rng.integers(0, len(vals), n)]

    @property
    def mean(self):
        return float(np.mean(self.values))

    @property
    def variance(self):
        return float(np.var(self.values))

    def __repr__(self):
        src = f"path={self.path!r}, " if self.path else ""
        return f"Empirical({src}n={len(self.values)}, mean={self.mean:.6g})"

    __str__ = __repr__


def _read_values(path: Path, column: int | str | None) -> tuple[float, ...]:
    """The numbers in ``path`` (one per line, or the CSV ``column``). Errors name the
    file, the line (1-based, as an editor counts) and the problem, never the file's
    text: ``path`` may name any readable file, not one the user wrote."""
    if not path.is_file():
        raise ValueError(f"cannot read '{path}': " + ("not a regular file" if path.exists() else "no such file"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"cannot read '{path}': not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror}") from None
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip() and not line.startswith("#")]
    try:
        rows = [(no, r) for (no, _), r in zip(lines, csv.reader(line for _, line in lines))]
    except csv.Error:
        raise ValueError(f"'{path}' is not a CSV file of numbers") from None
    if not rows:
        raise ValueError(f"'{path}' holds no values")
    if column is None:
        wide = next((no for no, r in rows if len(r) != 1), None)
        if wide is not None:
            raise ValueError(f"'{path}' line {wide}: several columns: set 'column'")
        idx, body = 0, rows
    elif isinstance(column, int):
        idx, body = column, rows
    else:
        header = [h.strip() for h in rows[0][1]]
        if column not in header:
            raise ValueError(f"'{path}' has no column {column!r} (its header, line {rows[0][0]}, "
                             f"has {len(header)} field{'s' if len(header) != 1 else ''})")
        idx, body = header.index(column), rows[1:]
    out = []
    for i, (no, r) in enumerate(body):
        try:
            out.append(float(r[idx]))
        except (IndexError, ValueError):
            if i == 0 and isinstance(column, int):  # a header line above numeric data
                continue
            what = "no such column" if len(r) <= idx else "not a number"
            raise ValueError(f"'{path}' line {no}: {what} in column {column if column is not None else 0!r}") \
                from None
    if not out:
        raise ValueError(f"'{path}' holds no values")
    return tuple(out)


# --------------------------------------------------------------------- mixture
_SIMPLE = (Constant, Exponential, ShiftedExponential, LogNormal, Gamma, Uniform, Normal, Weibull, Pareto, Empirical)


def _component(cls):
    return create_model(
        f"{cls.__name__}Component",
        __base__=cls,
        weight=(float, Field(gt=0, description="Relative weight of this component.")),
    )


_COMPONENTS = tuple(_component(c) for c in _SIMPLE)
ComponentSpec = Annotated[Union[_COMPONENTS], Field(discriminator="dist")]  # type: ignore[valid-type]


class Mixture(Distribution):
    """A weighted mixture, e.g. 90% normal machines and 10% stragglers."""

    dist: Literal["mixture"] = "mixture"
    components: tuple[ComponentSpec, ...] = Field(min_length=1, description="Components, each with a `weight`.")

    def _weights(self) -> np.ndarray:
        w = np.array([c.weight for c in self.components], dtype=float)
        return w / w.sum()

    def sample(self, rng, n):
        # Draw component labels first, then each component's values in order, so the
        # stream is consumed the same way for a given n.
        labels = rng.choice(len(self.components), size=n, p=self._weights())
        out = np.empty(n)
        for i, comp in enumerate(self.components):
            mask = labels == i
            k = int(mask.sum())
            if k:
                out[mask] = comp.sample(rng, k)
        return out

    @property
    def mean(self):
        return float(sum(w * c.mean for w, c in zip(self._weights(), self.components)))

    @property
    def variance(self):
        m2 = sum(w * (c.variance + c.mean**2) for w, c in zip(self._weights(), self.components))
        return float(m2 - self.mean**2)

    def __repr__(self):
        parts = ", ".join(f"{w:.3g}*{c!r}" for w, c in zip(self._weights(), self.components))
        return f"Mixture({parts})"

    __str__ = __repr__


DistributionSpec = Annotated[
    Union[Constant, Exponential, ShiftedExponential, LogNormal, Gamma, Uniform, Normal, Weibull, Pareto,
          Empirical, Mixture],
    Field(discriminator="dist"),
]


def parse_distribution(spec: dict[str, Any] | Distribution, base_dir: str | Path | None = None) -> Distribution:
    """Validate a ``{dist: ..., ...}`` mapping into a distribution (raises pydantic's ValidationError)."""
    if isinstance(spec, Distribution):
        return spec
    from pydantic import TypeAdapter

    return TypeAdapter(DistributionSpec).validate_python(spec, context={"base_dir": base_dir})
