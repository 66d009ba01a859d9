"""Metric policies: the one type every role imports.

A policy says what a metric is (its kind and bounds), which scheme carries it, how reports are
grouped into windows, when a window may be released (at least ``min_contributors`` reports),
and what each release costs in privacy. Policies are registered at the key-holder from a TOML
file an operator reviews, signed into the manifest, and read by SDKs and the server from
there, so a server cannot shrink a metric's bounds to shrink its noise.

Privacy unit: one report. Neighbouring datasets differ by *substituting* one report; the
number of reports in a window is public (the server sees it, as in DAP). A policy's
``contributions_per_window`` multiplies the sensitivity when one install may report a metric
more than once per window; the SDK enforces that limit across restarts (a state file), and
the server can cap what each ingest token sends per window.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from blindsum.shared.errors import InvalidInput, InvalidPolicy

Kind = Literal["count", "sum", "mean", "histogram", "vector"]
SchemeName = Literal["paillier", "ckks"]
Mechanism = Literal["gaussian", "laplace"]
NoiseMode = Literal["keyholder", "both"]
Validity = Literal["proof", "none"]
ProofForm = Literal["batched", "compact"]

KINDS: tuple[str, ...] = ("count", "sum", "mean", "histogram", "vector")
SCHEMES: tuple[str, ...] = ("paillier", "ckks")
MECHANISMS: tuple[str, ...] = ("gaussian", "laplace")
# Who adds release noise: the key-holder alone, or (threshold Paillier keys only) the
# key-holder and the aggregator server, each a full-budget draw (``shared/headroom.py``).
NOISE_MODES: tuple[str, ...] = ("keyholder", "both")
VALIDITIES: tuple[str, ...] = ("proof", "none")
# "batched": every commitment travels, so a server verifies many reports in one random
# combination; "compact": challenges instead of commitments (a 7-bucket histogram's proof
# is ~5x smaller), each report verified on its own (~5x the server CPU). shared/validity.
PROOF_FORMS: tuple[str, ...] = ("batched", "compact")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
MAX_SLOTS = 65_536
MAX_SLOT_VALUE = 2**40
MAX_CONTRIBUTORS = 10**9


@dataclass(frozen=True)
class Privacy:
    """Per-release privacy parameters and the metric's lifetime budget.

    Attributes:
        mechanism: "gaussian" ((epsilon, delta)-DP via zCDP, discrete Gaussian) or
            "laplace" (pure epsilon-DP, discrete Laplace).
        epsilon: cost of one release.
        delta: cost of one release (0 for laplace).
        budget_epsilon: total epsilon all releases of this metric may spend.
        budget_period: seconds after which the budget renews, aligned to the unix epoch
            (``"day"`` = 86,400: UTC days; ``"week"`` = 604,800); 0 (``"lifetime"``, the
            default) never renews. A window is charged to the period its start falls in.
            The default is the lifetime budget because a policy registered before periods
            existed must not start renewing (spending more) without its operator saying so.
        budget_delta: total delta they may spend. The key-holder's ledger admits a release
            while the metric's releases, composed either by adding epsilons and deltas
            (basic composition) or by adding zCDP costs and converting once, stay within
            ``(budget_epsilon, budget_delta)``. Default ``default_budget_delta``.
    """

    mechanism: Mechanism
    epsilon: float
    delta: float
    budget_epsilon: float
    budget_delta: float = -1.0  # replaced by the default in __post_init__
    budget_period: int = 0

    @property
    def renews(self) -> bool:
        """True if the budget renews every ``budget_period`` seconds (0: a lifetime budget)."""
        return self.budget_period > 0

    def __post_init__(self) -> None:
        if self.budget_delta < 0:
            object.__setattr__(self, "budget_delta", default_budget_delta(
                self.epsilon, self.delta, self.budget_epsilon))


# A budget's total delta has the same cap as one release's: a total above it may expose one
# report in full with a probability (1/1,000 over the budget's life) no deployment accepts.
MAX_BUDGET_DELTA = 1e-3


def basic_release_count(epsilon: float, budget_epsilon: float) -> int:
    """Releases of ``epsilon`` that fit ``budget_epsilon`` when epsilons add.

    The ledger's float tolerance, so ten releases of 0.1 fit a budget of 1.0.
    """
    count = math.floor(budget_epsilon / epsilon)
    while count * epsilon > budget_epsilon * (1 + 1e-9):
        count -= 1
    while (count + 1) * epsilon <= budget_epsilon * (1 + 1e-9):
        count += 1
    return count


def default_budget_delta(epsilon: float, delta: float, budget_epsilon: float) -> float:
    """The total delta a budget allows when the policy does not say: what basic
    composition already spent, i.e. ``delta`` times the releases ``budget_epsilon`` allows
    at ``epsilon`` each (capped at ``MAX_BUDGET_DELTA``).

    So the zCDP ledger never allows fewer releases than basic composition did, and it
    certifies them at the same (or a smaller) total delta. A laplace metric's default is
    0: its budget stays pure epsilon-DP unless the policy opts into a delta.
    """
    return min(delta * basic_release_count(epsilon, budget_epsilon), MAX_BUDGET_DELTA)



@dataclass(frozen=True)
class MetricPolicy:
    """One metric's full policy. Construct through ``MetricPolicy.from_mapping``."""

    name: str
    version: int
    kind: Kind
    scheme: SchemeName
    lower: float
    upper: float
    precision: float
    buckets: tuple[float, ...]
    dimension: int
    window_seconds: int
    late_seconds: int
    min_contributors: int
    max_contributors: int
    contributions_per_window: int
    allow_early_release: bool
    privacy: Privacy
    description: str = field(default="")
    noise: NoiseMode = "keyholder"
    # "proof": every report carries a NIZK that it is a valid encoding (shared/validity), the
    # server refuses any that does not verify; "none": the metric's results trust its clients.
    validity: Validity = "proof"
    proof_form: ProofForm = "batched"

    @property
    def noise_parties(self) -> tuple[str, ...]:
        """Who adds an independent full-budget noise draw to each release, in fold order."""
        return ("keyholder", "server") if self.noise == "both" else ("keyholder",)

    @property
    def proven(self) -> bool:
        """True if every report of this metric must carry a validity proof."""
        return self.validity == "proof"

    @property
    def slot_count(self) -> int:
        """How many integer slots one report of this metric carries."""
        if self.kind == "histogram":
            return len(self.buckets) - 1
        if self.kind == "vector":
            return self.dimension
        return 1

    @property
    def slot_max(self) -> int:
        """Largest value one report puts in a slot (encoded units)."""
        if self.kind == "histogram":
            return 1
        return round((self.upper - self.lower) / self.precision)

    @property
    def l1_sensitivity(self) -> int:
        """Largest L1 change of a window's slot sums when one report is substituted."""
        per_report = 2 if self.kind == "histogram" else self.slot_max * self.slot_count
        return per_report * self.contributions_per_window

    @property
    def l2_sensitivity(self) -> float:
        """Largest L2 change of a window's slot sums when one report is substituted."""
        if self.kind == "histogram":
            per_report = math.sqrt(2)
        else:
            per_report = self.slot_max * math.sqrt(self.slot_count)
        return per_report * self.contributions_per_window

    def window_start(self, at: float) -> int:
        """Start (unix seconds) of the window holding time ``at``.

        Windows are aligned to the unix epoch: ``[k * window_seconds, (k+1) * window_seconds)``,
        so every role computes the same window from the same instant.

        Raises:
            InvalidInput: ``at`` is not a finite, non-negative number of seconds.
        """
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            raise InvalidInput(f"time must be a finite number of unix seconds, got {at!r}")
        if at < 0:
            raise InvalidInput(f"time must not be before the unix epoch, got {at!r}")
        return math.floor(at) // self.window_seconds * self.window_seconds

    def to_json(self) -> dict[str, Any]:
        """Plain JSON object (the manifest's form); ``from_mapping`` reads it back."""
        data = asdict(self)
        data["buckets"] = list(self.buckets)
        # only the fields that apply to the kind, so the JSON reads back through from_mapping
        if self.kind == "histogram":
            del data["lower"], data["upper"], data["precision"]
        else:
            del data["buckets"]
        if self.kind != "vector":
            del data["dimension"]
        if self.noise == "keyholder":
            # the default is left out, so policies registered before the field existed keep
            # their canonical form (and their manifest signatures) byte for byte
            del data["noise"]
        if self.proof_form == "batched":
            del data["proof_form"]  # likewise
        return data

    @classmethod
    def from_mapping(cls, name: str, raw: Mapping[str, Any]) -> MetricPolicy:
        """Build and validate a policy from TOML/JSON data.

        Raises:
            InvalidPolicy: naming the metric and the field at fault.
        """
        return _PolicyReader(name, raw).read()


def load_policies_toml(text: str) -> list[MetricPolicy]:
    """Parse a policy file: one ``[metrics.NAME]`` table per metric.

    Raises:
        InvalidPolicy: on TOML syntax errors or any invalid metric (the whole file is refused).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidPolicy(f"policy file is not valid TOML: {exc}") from None
    unknown = set(document) - {"metrics", "budget"}
    if unknown:
        raise InvalidPolicy(f"policy file has unknown top-level keys: {sorted(unknown)}")
    if "budget" in document:
        UnitBudget.from_mapping(document["budget"])
    metrics = document.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise InvalidPolicy("policy file declares no [metrics.NAME] tables")
    policies = []
    for name, raw in metrics.items():
        if not isinstance(raw, dict):
            raise InvalidPolicy(f"metrics.{name} must be a table")
        policies.append(MetricPolicy.from_mapping(name, raw))
    return policies


_KNOWN_FIELDS = {
    "name", "version", "kind", "scheme", "lower", "upper", "precision", "buckets", "dimension",
    "window_seconds", "late_seconds", "min_contributors", "max_contributors",
    "contributions_per_window", "allow_early_release", "privacy", "description", "noise",
    "validity", "proof_form",
}
_KNOWN_PRIVACY = {"mechanism", "epsilon", "delta", "budget_epsilon", "budget_delta",
                  "budget_period"}
PERIODS = {"lifetime": 0, "day": 86_400, "week": 7 * 86_400}
MAX_PERIOD = 366 * 86_400


def describe_period(seconds: int) -> str:
    """A budget period in words: "day", "week", "lifetime" (0) or seconds."""
    names = {value: name for name, value in PERIODS.items()}
    return names.get(seconds, f"{seconds} s")


class _PolicyReader:
    """Validates one raw policy mapping field by field, with messages naming the field."""

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        self.name = name
        self.raw = raw

    def fail(self, message: str) -> InvalidPolicy:
        return InvalidPolicy(f"metric {self.name!r}: {message}")

    def integer(self, key: str, default: int | None, low: int, high: int) -> int:
        value = self.raw.get(key, default)
        if value is None:
            raise self.fail(f"{key} is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key} must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.fail(f"{key} must be between {low} and {high}, got {value}")
        return value

    def number(self, source: Mapping[str, Any], key: str, default: float | None) -> float:
        value = source.get(key, default)
        if value is None:
            raise self.fail(f"{key} is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{key} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise self.fail(f"{key} must be finite")
        return float(value)

    def choice(self, source: Mapping[str, Any], key: str, options: tuple[str, ...]) -> str:
        value = source.get(key)
        if value not in options:
            raise self.fail(f"{key} must be one of {list(options)}, got {value!r}")
        return str(value)

    def read(self) -> MetricPolicy:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise InvalidPolicy(
                f"metric name {self.name!r} must match {NAME_PATTERN.pattern}"
            )
        unknown = set(self.raw) - _KNOWN_FIELDS
        if unknown:
            raise self.fail(f"unknown fields {sorted(unknown)}")
        if "name" in self.raw and self.raw["name"] != self.name:
            raise self.fail(f"name field {self.raw['name']!r} differs from the table name")
        kind = self.choice(self.raw, "kind", KINDS)
        scheme = self.choice(self.raw, "scheme", SCHEMES)
        lower, upper, precision = self.bounds(kind)
        buckets = self.buckets(kind)
        dimension = self.integer("dimension", 1 if kind != "vector" else None, 1, MAX_SLOTS)
        if kind != "vector" and dimension != 1:
            raise self.fail("dimension applies to vector metrics only")
        window_seconds = self.integer("window_seconds", 3600, 1, 366 * 86400)
        min_contributors = self.integer("min_contributors", 10, 1, MAX_CONTRIBUTORS)
        max_contributors = self.integer("max_contributors", 1_000_000, 1, MAX_CONTRIBUTORS)
        if max_contributors < min_contributors:
            raise self.fail("max_contributors must be at least min_contributors")
        early = self.raw.get("allow_early_release", False)
        if not isinstance(early, bool):
            raise self.fail("allow_early_release must be true or false")
        noise = self.noise_mode(scheme)
        validity = self.validity(scheme)
        description = self.raw.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            raise self.fail("description must be a string of at most 500 characters")
        policy = MetricPolicy(
            name=self.name,
            version=self.integer("version", 1, 1, 2**31 - 1),
            kind=kind,  # type: ignore[arg-type]
            scheme=scheme,  # type: ignore[arg-type]
            lower=lower,
            upper=upper,
            precision=precision,
            buckets=buckets,
            dimension=dimension,
            window_seconds=window_seconds,
            late_seconds=self.integer("late_seconds", 0, 0, window_seconds),
            min_contributors=min_contributors,
            max_contributors=max_contributors,
            contributions_per_window=self.integer("contributions_per_window", 1, 1, 1000),
            allow_early_release=early,
            privacy=self.privacy(window_seconds),
            description=description,
            noise=noise,  # type: ignore[arg-type]
            validity=validity,  # type: ignore[arg-type]
            proof_form=self.proof_form(validity),  # type: ignore[arg-type]
        )
        if policy.slot_count > MAX_SLOTS:
            raise self.fail(f"a report may carry at most {MAX_SLOTS} slots")
        if policy.slot_max * max_contributors > 2**62:
            raise self.fail("upper-lower, precision and max_contributors make sums too large")
        return policy

    def noise_mode(self, scheme: str) -> str:
        value = self.raw.get("noise", "keyholder")
        if value not in NOISE_MODES:
            raise self.fail(f"noise must be one of {list(NOISE_MODES)}, got {value!r}")
        if value == "both" and scheme != "paillier":
            # CKKS has a single key: nobody but the key-holder can add noise before the
            # decryption, so a second party's noise could only be added after it
            raise self.fail('noise = "both" needs a threshold Paillier key; a ckks metric '
                            "is noised by the key-holder alone")
        return str(value)

    def validity(self, scheme: str) -> str:
        # Paillier reports are proven unless the policy opts out in so many words; CKKS has
        # no proof system here, so its metrics can only trust their clients.
        default = "proof" if scheme == "paillier" else "none"
        value = self.raw.get("validity", default)
        if value not in VALIDITIES:
            raise self.fail(f"validity must be one of {list(VALIDITIES)}, got {value!r}")
        if scheme == "ckks" and value == "proof":
            raise self.fail('validity = "proof" needs the paillier scheme: CKKS reports '
                            'carry no validity proofs (use validity = "none")')
        return str(value)

    def proof_form(self, validity: str) -> str:
        value = self.raw.get("proof_form", "batched")
        if value not in PROOF_FORMS:
            raise self.fail(f"proof_form must be one of {list(PROOF_FORMS)}, got {value!r}")
        if value != "batched" and validity == "none":
            raise self.fail('proof_form applies to validity = "proof" metrics only')
        return str(value)

    def bounds(self, kind: str) -> tuple[float, float, float]:
        if kind == "histogram":
            for key in ("lower", "upper", "precision"):
                if key in self.raw:
                    raise self.fail(f"{key} does not apply to histograms (use buckets)")
            return 0.0, 1.0, 1.0
        if kind == "count":
            lower = self.number(self.raw, "lower", 0)
            upper = self.number(self.raw, "upper", 1)
            precision = self.number(self.raw, "precision", 1)
            if lower != 0 or precision != 1 or upper != int(upper):
                raise self.fail("a count has lower = 0, precision = 1 and an integer upper")
        else:
            lower = self.number(self.raw, "lower", None)
            upper = self.number(self.raw, "upper", None)
            precision = self.number(self.raw, "precision", 1)
        if not upper > lower:
            raise self.fail(f"upper ({upper}) must be greater than lower ({lower})")
        if not precision > 0:
            raise self.fail("precision must be positive")
        steps = (upper - lower) / precision
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise self.fail("upper - lower must be a whole number of precision steps")
        if not 1 <= round(steps) <= MAX_SLOT_VALUE:
            raise self.fail(f"(upper - lower) / precision must be in 1..{MAX_SLOT_VALUE}")
        return lower, upper, precision

    def buckets(self, kind: str) -> tuple[float, ...]:
        raw = self.raw.get("buckets")
        if kind != "histogram":
            if raw is not None:
                raise self.fail("buckets apply to histogram metrics only")
            return ()
        if not isinstance(raw, list) or len(raw) < 3:
            raise self.fail("buckets must be a list of at least 3 edges (2 buckets)")
        edges = tuple(self.number({"edge": e}, "edge", None) for e in raw)
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise self.fail("bucket edges must be strictly increasing")
        return edges

    def period(self, raw: Mapping[str, Any], window_seconds: int) -> int:
        value = raw.get("budget_period", "lifetime")
        if isinstance(value, str):
            if value not in PERIODS:
                raise self.fail(f"privacy.budget_period must be one of {list(PERIODS)} or "
                                f"a number of seconds, got {value!r}")
            value = PERIODS[value]
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"privacy.budget_period must be a period name or whole seconds "
                            f"(>= 0), got {value!r}")
        if value and (value % window_seconds or value > MAX_PERIOD):
            raise self.fail(
                f"privacy.budget_period ({value} s) must be a whole number of windows "
                f"({window_seconds} s) and at most {MAX_PERIOD} s, so each window falls in "
                "one period")
        return value

    def privacy(self, window_seconds: int) -> Privacy:
        raw = self.raw.get("privacy")
        if not isinstance(raw, Mapping):
            raise self.fail("a [privacy] table is required")
        unknown = set(raw) - _KNOWN_PRIVACY
        if unknown:
            raise self.fail(f"unknown privacy fields {sorted(unknown)}")
        mechanism = self.choice(raw, "mechanism", MECHANISMS)
        epsilon = self.number(raw, "epsilon", None)
        if not 0 < epsilon <= 100:
            raise self.fail("privacy.epsilon must be in (0, 100]")
        if mechanism == "gaussian":
            delta = self.number(raw, "delta", None)
            if not 0 < delta < 1e-3:
                raise self.fail("privacy.delta must be in (0, 0.001) for the gaussian mechanism")
        else:
            delta = self.number(raw, "delta", 0)
            if delta != 0:
                raise self.fail("privacy.delta must be 0 for the laplace mechanism")
        budget = self.number(raw, "budget_epsilon", None)
        if budget < epsilon:
            raise self.fail("privacy.budget_epsilon must allow at least one release")
        budget_delta = self.number(raw, "budget_delta",
                                   default_budget_delta(epsilon, delta, budget))
        if not delta <= budget_delta <= MAX_BUDGET_DELTA:
            raise self.fail(
                f"privacy.budget_delta must be between the release's delta ({delta:g}) and "
                f"{MAX_BUDGET_DELTA:g}, got {budget_delta:g}")
        period = self.period(raw, window_seconds)
        return Privacy(mechanism, epsilon, delta, budget, budget_delta,  # type: ignore[arg-type]
                       period)


@dataclass(frozen=True)
class UnitBudget:
    """What one privacy unit (a device) may spend per period across *all* metrics.

    The key-holder checks it when policies are registered: every metric's per-release cost
    times its windows per period, composed (the tighter of basic and zCDP composition),
    must fit ``(epsilon, delta)``. A policy file sets it with a ``[budget]`` table.
    """

    epsilon: float
    delta: float
    period: int

    def raises(self, before: UnitBudget) -> bool:
        """True if this budget allows more than ``before``: a bigger epsilon or delta, or
        the same spent over a shorter period."""
        return (self.epsilon > before.epsilon or self.delta > before.delta
                or self.period < before.period)

    def to_json(self) -> dict[str, float | int]:
        return {"epsilon": self.epsilon, "delta": self.delta, "period": self.period}

    @classmethod
    def from_mapping(cls, raw: object) -> UnitBudget:
        """Validate a ``[budget]`` table: ``epsilon``, ``delta``, ``period``.

        Raises:
            InvalidPolicy: naming the field at fault.
        """
        if not isinstance(raw, Mapping):
            raise InvalidPolicy("[budget] must be a table with epsilon, delta and period")
        unknown = set(raw) - {"epsilon", "delta", "period"}
        if unknown:
            raise InvalidPolicy(f"[budget] has unknown fields {sorted(unknown)}")
        reader = _PolicyReader("budget", raw)
        epsilon = reader.number(raw, "epsilon", None)
        if not 0 < epsilon <= 100:
            raise InvalidPolicy(f"budget.epsilon must be in (0, 100], got {epsilon:g}")
        delta = reader.number(raw, "delta", 0)
        if not 0 <= delta <= MAX_BUDGET_DELTA:
            raise InvalidPolicy(f"budget.delta must be in [0, {MAX_BUDGET_DELTA:g}], got "
                                f"{delta:g}")
        period = raw.get("period", "day")
        if period == "lifetime" or period == 0:
            raise InvalidPolicy("budget.period must renew: a day, a week or whole seconds")
        try:
            seconds = reader.period({"budget_period": period}, 1)
        except InvalidPolicy as exc:
            raise InvalidPolicy(str(exc).replace("metric 'budget': privacy.budget_period",
                                                 "budget.period")) from None
        return cls(epsilon, delta, seconds)


def load_unit_budget_toml(text: str) -> UnitBudget | None:
    """The ``[budget]`` table of a policy file, or None if it has none.

    Raises:
        InvalidPolicy: the file is not valid TOML or the table is invalid.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidPolicy(f"policy file is not valid TOML: {exc}") from None
    raw = document.get("budget")
    return None if raw is None else UnitBudget.from_mapping(raw)
