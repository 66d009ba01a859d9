"""The methodology note states every fact a reader needs, from the policy and its release.

One test per thing the note must say: what is measured, bounds and the clipping caveat,
the mechanism and its scale, the privacy cost per release and per period, window and k,
the privacy unit, the trust mode (threshold, proofs or trusted clients), and verification.
"""

from __future__ import annotations

from blindsum.server.aggregator.methodology import Section, methodology
from blindsum.server.noise import noise_plan
from blindsum.shared.codec import ReleaseResult
from blindsum.shared.policy import MetricPolicy

IDENTITY = "ed25519:QUcxqUpWrTn3"
RHO = "\u03c1"  # spelled out: ruff mistakes the letter for a Latin p
GAUSSIAN = {
    "mechanism": "gaussian",
    "epsilon": 0.5,
    "delta": 1e-7,
    "budget_epsilon": 8.0,
    "budget_delta": 1e-6,
    "budget_period": "week",
}
LAPLACE = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 30.0}
TEMP = MetricPolicy.from_mapping(
    "battery_temp_c",
    {
        "kind": "mean",
        "scheme": "paillier",
        "lower": -20,
        "upper": 60,
        "precision": 0.1,
        "window_seconds": 3600,
        "late_seconds": 600,
        "min_contributors": 25,
        "contributions_per_window": 2,
        "description": "Battery temperature in degrees C.",
        "privacy": GAUSSIAN,
    },
)
PAGES = MetricPolicy.from_mapping(
    "pages",
    {
        "kind": "histogram",
        "scheme": "paillier",
        "buckets": [0, 1, 2, 3, 4],
        "window_seconds": 86400,
        "min_contributors": 5,
        "privacy": LAPLACE,
    },
)
EMBED = MetricPolicy.from_mapping(
    "embed",
    {
        "kind": "vector",
        "scheme": "ckks",
        "dimension": 8,
        "lower": 0,
        "upper": 10,
        "privacy": LAPLACE,
    },
)


def _released(policy: MetricPolicy, threshold: bool) -> ReleaseResult:
    """A result as the key-holder signs it for ``policy``: its real noise scale and rho."""
    plan = noise_plan(policy)
    scalar = policy.kind in ("count", "sum", "mean")
    value = 21.5 if scalar else [1.0] * policy.slot_count
    ci = (20.0, 23.0) if scalar else tuple((0.0, 3.0) for _ in range(policy.slot_count))
    return ReleaseResult(
        metric=policy.name,
        version=policy.version,
        kind=policy.kind,
        scheme=policy.scheme,
        window=7200,
        window_seconds=policy.window_seconds,
        key_id="pai-1",
        report_count=40,
        report_ids_digest="ab" * 32,
        request_digest="cd" * 32,
        value=value if scalar else tuple(value),
        noisy_value=value if scalar else tuple(value),
        ci=ci,
        confidence=0.95,
        consistent=True,
        mechanism=plan.mechanism,
        epsilon=plan.epsilon,
        delta=plan.delta,
        rho=plan.rho,
        scale=plan.scale,
        released_at=11_000.0,
        audit_seq=1,
        audit_head="ef" * 32,
        threshold=threshold,
    )


def _note(policy: MetricPolicy, released: ReleaseResult | None = None) -> dict[str, str]:
    sections: tuple[Section, ...] = methodology(policy, IDENTITY, released)
    return {s.heading: " ".join(s.sentences) for s in sections}


def test_the_note_has_every_section_in_reading_order() -> None:
    assert list(_note(TEMP)) == [
        "What is measured",
        "Bounds and clipping",
        "Noise",
        "Privacy cost",
        "Windows and minimum reports",
        "Privacy unit",
        "Trust",
        "How to verify a result",
    ]


def test_it_says_what_is_measured_and_how_values_are_bounded() -> None:
    note = _note(TEMP)
    assert note["What is measured"].startswith("Battery temperature in degrees C.")
    assert "the mean of the reported values" in note["What is measured"]
    bounds = note["Bounds and clipping"]
    assert "clipped to [-20, 60] and rounded to a multiple of 0.1 on the device" in bounds
    assert "does not cover clipping bias" in bounds
    histogram = _note(PAGES)["Bounds and clipping"]
    assert "Bucket edges: 0, 1, 2, 3, 4." in histogram
    assert "below 0 is counted in the first bucket" in histogram


def test_it_states_the_mechanism_with_the_scale_actually_released() -> None:
    released = _released(TEMP, threshold=False)
    noise = _note(TEMP, released)["Noise"]
    assert noise.startswith("Discrete Gaussian noise (OpenDP)")
    assert f"L2 sensitivity {TEMP.l2_sensitivity:.4g}" in noise
    assert f"Noise scale {released.scale:.4g} slot units (as released)." in noise
    assert "simultaneous band (Bonferroni over the slots)" in noise
    laplace = _note(PAGES, _released(PAGES, threshold=False))["Noise"]
    assert "Discrete Laplace noise" in laplace and "pure ε-DP, δ = 0" in laplace
    assert "nearest non-negative whole counts that add up to the number of reports" in laplace


def test_it_states_the_privacy_cost_per_release_per_day_and_per_budget_period() -> None:
    released = _released(TEMP, threshold=False)
    assert released.rho is not None
    cost = _note(TEMP, released)["Privacy cost"]
    assert f"costs ε = 0.5, δ = 1e-07 ({RHO} = {released.rho:.4g} zCDP)" in cost
    assert "up to 24 releases a day: ε = 12 a day by basic composition" in cost
    assert "budget is ε = 8, δ = 1e-06" in cost and "renews every week" in cost
    lifetime = _note(PAGES)["Privacy cost"]
    assert "lifetime budget is ε = 30: at most 30 releases" in lifetime
    assert "up to 1 releases a day" in lifetime  # daily windows


def test_it_states_the_window_k_and_the_privacy_unit() -> None:
    note = _note(TEMP)
    windows = note["Windows and minimum reports"]
    assert "Windows are 1 hour long, aligned to the Unix epoch (UTC)." in windows
    assert "up to 10 minutes after a window ends" in windows
    assert "at least k = 25 reports" in windows
    unit = note["Privacy unit"]
    assert unit.startswith(
        "One install's reports in one window: at most 2 reports, and the "
        "sensitivity above is that of 2 reports"
    )
    assert "the number of reports in a window is public" in unit


def test_it_names_the_trust_mode_of_each_kind_of_deployment() -> None:
    threshold = _note(TEMP, _released(TEMP, threshold=True))["Trust"]
    assert "two-party threshold key" in threshold and "neither can decrypt" in threshold
    assert "Every report is proven valid" in threshold
    single = _note(TEMP, _released(TEMP, threshold=False))["Trust"]
    assert "threshold" not in single and "never holds a decryption key" in single
    unproven = MetricPolicy.from_mapping(TEMP.name, {**TEMP.to_json(), "validity": "none"})
    assert 'trusts its clients (validity = "none")' in _note(unproven)["Trust"]
    ckks = _note(EMBED)["Trust"]
    assert "CKKS under a single key" in ckks and "no validity proofs" in ckks


def test_it_says_how_to_verify_against_the_pinned_identity() -> None:
    single = _note(TEMP, _released(TEMP, threshold=False))["How to verify a result"]
    assert f"Pin the key-holder's identity {IDENTITY}" in single
    assert f"(version {TEMP.version})" in single
    assert "blindsum verify RESULT.json --identity IDENTITY" in single
    assert "proofs of partial decryption" not in single
    threshold = _note(TEMP, _released(TEMP, threshold=True))["How to verify a result"]
    assert "both parties' proofs of partial decryption" in threshold


def test_a_note_without_a_release_yet_omits_only_what_a_release_states() -> None:
    before = _note(TEMP)
    after = _note(TEMP, _released(TEMP, threshold=False))
    assert "as released" not in before["Noise"] and "as released" in after["Noise"]
    stated = f"({RHO} = "
    assert stated not in before["Privacy cost"] and stated in after["Privacy cost"]
    assert {k: v for k, v in before.items() if k not in ("Noise", "Privacy cost")} == {
        k: v for k, v in after.items() if k not in ("Noise", "Privacy cost")
    }
