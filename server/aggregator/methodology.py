"""A methodology note per metric, generated from its signed policy (never written by hand).

Each section is a heading and plain sentences, so the dashboard renders it as HTML and the
exports and tests read it as text. The numbers come from the policy and from the noise scale and
zCDP cost its signed results state, so the note cannot drift from what is actually done.
"""

from __future__ import annotations

from dataclasses import dataclass

from blindsum.shared.codec import ReleaseResult
from blindsum.shared.policy import MetricPolicy, describe_period

DAY = 86_400
RHO = "\u03c1"  # spelled out: ruff mistakes the letter for a Latin p


@dataclass(frozen=True)
class Section:
    heading: str
    sentences: tuple[str, ...]


def _duration(seconds: int) -> str:
    for size, name in ((DAY, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {name}" + ("s" if count != 1 else "")
    return f"{seconds} seconds"


def measured(policy: MetricPolicy) -> Section:
    what = policy.description.rstrip(". ") or f"A {policy.kind} over the reports of each window"
    kinds = {
        "count": f"the number of reports (each report counts 0 to {policy.upper:g})",
        "sum": "the sum of the reported values",
        "mean": "the mean of the reported values (their sum divided by the public count)",
        "histogram": f"how many reports fall in each of {policy.slot_count} buckets",
        "vector": f"the sum of each of {policy.dimension} coordinates over the reports",
    }
    return Section("What is measured", (
        f"{what}.", f"Each window publishes {kinds[policy.kind]}, with the number of reports.",
    ))


def bounds(policy: MetricPolicy) -> Section:
    if policy.kind == "histogram":
        edges = ", ".join(f"{e:g}" for e in policy.buckets)
        clip = (f"Bucket edges: {edges}. A value below {policy.buckets[0]:g} is counted in the "
                f"first bucket and a value at or above {policy.buckets[-1]:g} in the last.")
    else:
        clip = (f"Each value is clipped to [{policy.lower:g}, {policy.upper:g}] and rounded to "
                f"a multiple of {policy.precision:g} on the device before it is encrypted.")
    return Section("Bounds and clipping", (
        clip,
        "The confidence interval covers the differential-privacy noise around the clipped "
        "value; it does not cover clipping bias (values outside the bounds are counted at "
        "the nearest bound).",
    ))


def mechanism(policy: MetricPolicy, scale: float | None) -> Section:
    privacy = policy.privacy
    if privacy.mechanism == "laplace":
        first = (f"Discrete Laplace noise (OpenDP) on each integer slot sum, calibrated to the "
                 f"L1 sensitivity {policy.l1_sensitivity}: pure ε-DP, δ = 0.")
    else:
        first = (f"Discrete Gaussian noise (OpenDP) on each integer slot sum, calibrated to the "
                 f"L2 sensitivity {policy.l2_sensitivity:.4g} under {RHO}-zCDP, which implies "
                 f"(ε, δ)-DP.")
    stated = "" if scale is None else f" Noise scale {scale:.4g} slot units (as released)."
    if policy.noise == "both":
        stated += (
            " Two independent draws of this noise are added under encryption, one by the "
            "key-holder and one by the aggregator server, each calibrated to the full "
            "privacy cost on its own: the release stays differentially private if either "
            "party adds its noise honestly, and neither learns the exact aggregate. The "
            "intervals are for the sum of the two draws, so they are wider than one draw's "
            "(about \u221a2 times for Gaussian noise): the price of trusting neither party "
            "alone with the noise.")
    return Section("Noise", (first + stated, (
        "The interval shown per value is its 95% interval; for a histogram or vector a "
        "simultaneous band (Bonferroni over the slots) holds for all of them at once.") + (
        " Histogram counts are shown as the nearest non-negative whole counts that add up "
        "to the number of reports (post-processing, no privacy cost); the raw noisy counts "
        "are in the JSON and CSV exports." if policy.kind == "histogram" else "")))


def privacy_cost(policy: MetricPolicy, rho: float | None) -> Section:
    privacy = policy.privacy
    per = f"ε = {privacy.epsilon:g}"
    if privacy.mechanism == "gaussian":
        per += f", δ = {privacy.delta:g}" + ("" if rho is None else f" ({RHO} = {rho:.4g} zCDP)")
    per_day = DAY / policy.window_seconds
    releases = int(privacy.budget_epsilon / privacy.epsilon * (1 + 1e-9))
    lifetime = (
        f"The metric's lifetime budget is ε = {privacy.budget_epsilon:g}: at most {releases} "
        "releases, after which the key-holder publishes nothing more for it.")
    if privacy.budget_delta > 0:
        lifetime = (
            f"The metric's budget is ε = {privacy.budget_epsilon:g}, δ = "
            f"{privacy.budget_delta:.3g}: the key-holder adds the releases' zCDP costs and "
            "converts them once (OpenDP), paying a release while that or basic composition "
            f"fits, so it allows more than the {releases} releases basic composition would.")
    if privacy.budget_period:
        lifetime += f" The budget renews every {describe_period(privacy.budget_period)}."
    return Section("Privacy cost", (
        f"Each window is released at most once and costs {per}.",
        f"With windows of {_duration(policy.window_seconds)} that is up to "
        f"{per_day:g} releases a day: ε = {per_day * privacy.epsilon:g} a day by basic "
        "composition.",
        lifetime,
    ))


def windows(policy: MetricPolicy) -> Section:
    late = (f" Reports may arrive up to {_duration(policy.late_seconds)} after a window ends."
            if policy.late_seconds else "")
    early = (" An operator may release a window before it ends." if policy.allow_early_release
             else "")
    return Section("Windows and minimum reports", (
        f"Windows are {_duration(policy.window_seconds)} long, aligned to the Unix epoch "
        f"(UTC).{late}{early}",
        f"A window is published only with at least k = {policy.min_contributors} reports "
        f"(and at most {policy.max_contributors:,}).",
    ))


def privacy_unit(policy: MetricPolicy) -> Section:
    per = policy.contributions_per_window
    reports = f"{per} report{'s' if per != 1 else ''}"
    return Section("Privacy unit", (
        f"One install's reports in one window: at most {reports}, and the sensitivity above "
        f"is that of {reports}, so neighbouring datasets differ by substituting all of one "
        "install's reports to a window. What is protected is the values; the number of "
        "reports in a window is public.",
        "The SDK keeps its per-window counts in a state file, so an app restart or a second "
        "client of the same install does not reset them; a client that ignores the limit is "
        "protected per report only, and an ingest token's report cap bounds what it can "
        "send.",
    ))


def validity(policy: MetricPolicy) -> str:
    """One sentence: is every report proven valid, or does the metric trust its clients?"""
    if policy.proven:
        return ("Every report is proven valid: it carries a zero-knowledge proof that it "
                "encrypts a value within this policy's bounds (one bucket for a histogram), "
                "bound to its metric, version, window, key and report id, and the server "
                "refuses any report whose proof does not verify.")
    return ('This metric trusts its clients (validity = "none"): reports carry no validity '
            "proof, so a dishonest client could put a value outside the bounds into the sum.")


def trust(policy: MetricPolicy, threshold: bool = False) -> Section:
    if policy.scheme == "paillier" and threshold:
        sentences = (
            "Reports are encrypted on the device with Paillier under a two-party threshold "
            "key: the key-holder and the server each hold one share, and neither can decrypt "
            "anything alone.",
            "At release the key-holder pays from the budget, folds its encrypted noise into "
            "the window's aggregate, and both parties decrypt only that noised ciphertext, "
            "each with a proof of correct decryption: nobody ever sees the exact aggregate.",
            validity(policy),
            "An individual's value stays private unless the server and the key-holder "
            "collude; invented (Sybil) reports are bounded only by k and differential privacy.",
        )
    elif policy.scheme == "paillier":
        sentences = (
            "Reports are encrypted on the device with Paillier. The server only adds "
            "ciphertexts and never holds a decryption key; the key-holder decrypts only "
            "window aggregates, adds the noise and signs the result.",
            validity(policy),
            "An individual's value stays private unless the server and the key-holder "
            "collude; invented (Sybil) reports are bounded only by k and differential privacy.",
        )
    else:
        sentences = (
            "Reports are encrypted on the device with CKKS under a single key held by the "
            "key-holder. There are no validity proofs: this metric trusts its clients to "
            "report within the bounds, and an honest-but-curious server.",
            "Raw CKKS decryptions never leave the key-holder: sums are rounded to integers and "
            "always noised before release.",
        )
    return Section("Trust", sentences)


def verification(policy: MetricPolicy, identity: str, threshold: bool = False) -> Section:
    check = (
        "For a threshold result, `blindsum verify RESULT.json --identity IDENTITY` also checks "
        "offline both parties' proofs of partial decryption and that the published value is "
        "exactly the decryption of the noised aggregate (RESULT.json: one entry of the JSON "
        "export, or its \"verify\" link on this page)."
        if threshold else
        "`blindsum verify RESULT.json --identity IDENTITY` does this offline (RESULT.json: one "
        "entry of the JSON export, or its \"verify\" link on this page).")
    return Section("How to verify a result", (
        f"Pin the key-holder's identity {identity} and fetch the signed manifest; it holds this "
        f"policy (version {policy.version}).",
        "Each result's document is Ed25519-signed by that identity: verify the signature over "
        "the UTF-8 bytes of document.payload, then read the value, interval, ε and report "
        "count from that payload, not from the unsigned fields beside it.",
        check,
    ))


def kept(retention_seconds: float) -> Section:
    """What the server keeps of this metric's data, and for how long (its retention)."""
    seconds = int(retention_seconds)
    after = (f"for {_duration(seconds)} after" if seconds
             else "until the next sweep (within a minute) after")
    return Section("What is kept, and for how long", (
        f"Each report's ciphertext (and validity proof) is kept {after} its window is "
        "released or refused, then erased.",
        "Its random report id, metric and window are kept for good, so that a late retry of "
        "an acknowledged report is recognised and never counted twice.",
        "Each window's encrypted aggregate and report count, and every signed result, are "
        "kept for good: they are what is published. The server never holds a plaintext "
        "value.",
    ))


def methodology(policy: MetricPolicy, identity: str,
                released: ReleaseResult | None = None,
                retention_seconds: float | None = None) -> tuple[Section, ...]:
    """Every section of the note for ``policy``, in reading order.

    ``released`` is a result of this policy version, if there is one: its noise ``scale``
    and zCDP ``rho`` are what the key-holder actually used, and it says whether the metric's
    key is a threshold key. ``retention_seconds`` is the server's report retention; when
    given, a section says what is kept and for how long.
    """
    threshold = released is not None and released.threshold
    retention = () if retention_seconds is None else (kept(retention_seconds),)
    return (measured(policy), bounds(policy),
            mechanism(policy, None if released is None else released.scale),
            privacy_cost(policy, None if released is None else released.rho),
            windows(policy), privacy_unit(policy), *retention, trust(policy, threshold),
            verification(policy, identity, threshold))
