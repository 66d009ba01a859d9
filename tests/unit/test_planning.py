"""Planning before going live: accuracy, lifetime, warnings and simulations of a policy."""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from pathlib import Path

import pytest

from blindsum.server.cli import main
from blindsum.server.keyholder import accounting
from blindsum.server.keyholder.release import noise_plan
from blindsum.server.keyholder.service import Keyholder
from blindsum.server.planning.accuracy import (
    accuracy,
    default_contributors,
    explore,
    lifetime,
    with_settings,
)
from blindsum.server.planning.preview import preview
from blindsum.server.planning.sample import raw_truth, read_sample, simulate
from blindsum.shared.codec import ReleaseRequest, report_ids_digest
from blindsum.shared.encoding import decode, encode
from blindsum.shared.errors import InvalidInput, InvalidPolicy
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.policy import MetricPolicy, load_policies_toml
from blindsum.shared.signing import verify_document

SERVER = Path(__file__).resolve().parents[2] / "server"
DEMO = {p.name: p for f in ("demo_paillier.toml", "demo_ckks.toml")
        for p in load_policies_toml((SERVER / f).read_text())}

POLICIES = """
[metrics.minutes]
kind = "sum"
scheme = "paillier"
lower = 0
upper = 60
min_contributors = 3
window_seconds = 60
privacy = { mechanism = "gaussian", epsilon = 20.0, delta = 1e-7, budget_epsilon = 400 }

[metrics.temperature]
kind = "mean"
scheme = "paillier"
lower = -20
upper = 60
precision = 0.5
min_contributors = 3
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 30.0, budget_epsilon = 400 }

[metrics.latency]
kind = "histogram"
scheme = "paillier"
buckets = [0, 10, 100, 1000]
min_contributors = 3
window_seconds = 60
privacy = { mechanism = "gaussian", epsilon = 25.0, delta = 1e-8, budget_epsilon = 400 }

[metrics.features]
kind = "vector"
scheme = "ckks"
dimension = 3
lower = 0
upper = 30
precision = 1
min_contributors = 3
window_seconds = 60
privacy = { mechanism = "gaussian", epsilon = 20.0, delta = 1e-7, budget_epsilon = 400 }

[metrics.crash_free]
kind = "mean"
scheme = "ckks"
lower = 0
upper = 1
precision = 0.01
min_contributors = 3
window_seconds = 60
privacy = { mechanism = "laplace", epsilon = 30.0, budget_epsilon = 400 }
"""
# Three reports per window and a large epsilon: the noise is small against the value domain,
# so at least one end of a published interval is not clipped to the domain.
REPORTS = {"minutes": [5, 60, 17], "temperature": [-3.5, 21.0, 35.5], "latency": [3, 50, 999],
           "features": [[1, 20, 3], [0, 15, 30], [5, 5, 5]], "crash_free": [0.9, 0.5, 0.75]}


def policy_from(text: str, name: str = "m") -> MetricPolicy:
    return load_policies_toml(f"[metrics.{name}]\n{text}")[0]


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> Keyholder:
    # registered in 1970, so windows 0, 60, ... are inside the release horizon...
    holder, _ = Keyholder.init(tmp_path_factory.mktemp("planning") / "kh", None, 2048,
                               clock=lambda: 0.0)
    holder.add_policies(load_policies_toml(POLICIES))
    holder.db.clock = time.time  # ...and released now, long after they closed
    return holder


def unclipped_half_widths(policy: MetricPolicy, result: dict) -> list[float]:
    """Half-widths read off the ends of published intervals that the domain did not clip."""
    n = result["report_count"]
    floor = decode(policy, [0] * policy.slot_count, n, 0).value
    top = decode(policy, [n * policy.slot_max] * policy.slot_count, n, 0).value
    floors, tops = (floor, top) if isinstance(floor, list) else ([floor], [top])
    raws = result.get("noisy_value", result["value"])
    raws = raws if isinstance(raws, list) else [raws]
    cis = result["ci"] if isinstance(result["ci"][0], list) else [result["ci"]]
    widths = []
    for raw, (low, high), f, t in zip(raws, cis, floors, tops, strict=True):
        widths += [raw - low] if f < low < t else []
        widths += [high - raw] if f < high < t else []
    return widths


def published_half_width(holder: Keyholder, metric: str) -> tuple[float, int]:
    """Real releases of three reports; the half-width of their published intervals."""
    manifest = Manifest.verify(holder.db.latest_manifest(), holder.identity.public_key())
    policy = manifest.policy(metric)
    key = manifest.active_key(policy.scheme)
    public = holder.secret_for(policy.scheme, key.key_id).public
    spec = slot_spec(policy)
    ciphertexts = [public.load(public.encrypt(encode(policy, v), spec), spec)
                   for v in REPORTS[metric]]
    aggregate = tuple(public.dump(public.add_many(ciphertexts)))
    digest = report_ids_digest([secrets.token_bytes(16) for _ in REPORTS[metric]])
    widths: list[float] = []
    for window in range(0, 600, 60):
        answer = holder.releaser().release(ReleaseRequest(
            metric, policy.version, window, key.key_id, len(REPORTS[metric]), digest,
            aggregate))
        document = getattr(answer, "document", answer)
        result = verify_document(document, holder.identity.public_key(), "result")
        widths += unclipped_half_widths(policy, result)
        if len(widths) >= 3:
            break
    assert widths, "every published interval was clipped at both ends"
    assert max(widths) == pytest.approx(min(widths), rel=1e-9)  # one half-width, stated
    return widths[0], result["report_count"]


@pytest.mark.parametrize("metric", ["minutes", "temperature", "latency", "features",
                                    "crash_free"])
def test_explore_half_width_is_the_one_the_keyholder_publishes(
    holder: Keyholder, metric: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = holder.db.policy(metric, 1)
    assert policy is not None
    published, count = published_half_width(holder, metric)
    exploration = explore(policy, [policy.privacy.epsilon], [count])
    assert exploration.at(policy.privacy.epsilon, count).half_width == pytest.approx(
        published, rel=1e-12)
    # ...and so does the command an operator runs on the policy file
    (tmp_path / "policies.toml").write_text(POLICIES)
    capsys.readouterr()
    assert main(["explore", str(tmp_path / "policies.toml"), "--metric", metric,
                 "--epsilon", str(policy.privacy.epsilon), "--contributors", str(count),
                 "--no-plots", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["metrics"]
    (row,) = [r for r in shown["rows"] if r["epsilon"] == policy.privacy.epsilon]
    assert row["contributors"] == count
    assert row["half_width"] == pytest.approx(published, rel=1e-12)


def test_a_means_interval_narrows_with_reports_a_sums_does_not() -> None:
    mean, total = DEMO["battery_temp_c"], DEMO["session_seconds"]
    assert accuracy(mean, 200).half_width == pytest.approx(accuracy(mean, 20).half_width / 10)
    assert accuracy(total, 200).half_width == accuracy(total, 20).half_width
    # ...but the sum's share of its (growing) range shrinks the same way.
    assert accuracy(total, 200).relative == pytest.approx(accuracy(total, 20).relative / 10)


def test_accuracy_follows_the_noise_plan_and_units() -> None:
    policy = DEMO["battery_temp_c"]  # mean, precision 0.1: half-width * 0.1 / n
    plan = noise_plan(policy)
    row = accuracy(policy, 50)
    assert (row.scale, row.mechanism) == (plan.scale, "gaussian")
    assert row.half_width == pytest.approx(plan.half_width(0.05) * 0.1 / 50, rel=1e-12)
    assert row.value_range == 80
    assert accuracy(policy, 50, epsilon=2.0).half_width < row.half_width


def test_more_privacy_means_wider_intervals_and_a_longer_budget() -> None:
    exploration = explore(DEMO["session_seconds"], [0.5, 2.0], [100])
    narrow, wide = exploration.at(2.0, 100), exploration.at(0.5, 100)
    assert wide.half_width > narrow.half_width
    assert exploration.lifetimes[0.5].basic_releases == 96
    assert exploration.lifetimes[1.0].basic_releases == 48  # the policy's own epsilon
    assert exploration.epsilons == (0.5, 1.0, 2.0)


def test_lifetime_books_zcdp_against_the_same_total_delta() -> None:
    policy = DEMO["session_seconds"]
    life = lifetime(policy)
    assert life.releases_per_day == 24 and life.epsilon_per_day == 24
    assert life.basic_releases == 48
    assert life.zcdp_delta == pytest.approx(48 * 1e-7)
    rho = noise_plan(policy).rho
    assert life.zcdp_releases == accounting.releases_within(rho, 48.0, life.zcdp_delta)
    assert accounting.composed_epsilon(rho, life.zcdp_releases, life.zcdp_delta) <= 48
    assert life.zcdp_releases > 10 * life.basic_releases
    assert life.days(life.basic_releases) == 2


def test_a_pure_dp_metric_keeps_basic_composition() -> None:
    life = lifetime(DEMO["app_opened"])
    assert life.zcdp_releases is None and life.zcdp_delta is None
    assert life.basic_releases == 48


def test_settings_are_revalidated() -> None:
    policy = DEMO["session_seconds"]
    wider = with_settings(policy, upper=7200)
    assert accuracy(wider, 20).half_width > accuracy(policy, 20).half_width
    assert lifetime(with_settings(policy, window_seconds=86400)).releases_per_day == 1
    with pytest.raises(InvalidPolicy, match="upper"):
        with_settings(policy, upper=-5)
    with pytest.raises(InvalidPolicy, match="precision"):
        with_settings(policy, precision=7)
    with pytest.raises(InvalidInput, match="cannot vary"):
        with_settings(policy, epsilon=3)


def test_default_contributor_grid_stops_at_the_maximum() -> None:
    policy = policy_from('kind = "count"\nscheme = "paillier"\nmin_contributors = 50\n'
                         'max_contributors = 2000\n'
                         'privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 5 }')
    assert default_contributors(policy) == (50, 500, 2000)


@pytest.mark.parametrize(("epsilons", "contributors"), [
    ([0.0], [10]), ([101], [10]), ([True], [10]), (["1"], [10]),
    ([1.0], [0]), ([1.0], [2.5]), ([1.0], [False]),
])
def test_explore_refuses_bad_grids(epsilons, contributors) -> None:
    with pytest.raises(InvalidInput):
        explore(DEMO["app_opened"], epsilons, contributors)


def messages(policy: MetricPolicy, contributors: int | None = None) -> list[tuple[str, str]]:
    return [(w.kind, w.message) for w in preview(policy, contributors).warnings]


GOOD = ('kind = "count"\nscheme = "paillier"\nmin_contributors = 1000\nwindow_seconds = 86400\n'
        'privacy = { mechanism = "laplace", epsilon = 0.5, budget_epsilon = 5 }')


def test_a_reasonable_policy_has_no_warnings() -> None:
    assert messages(policy_from(GOOD)) == []


@pytest.mark.parametrize(("change", "kind", "words"), [
    (("epsilon = 0.5", "epsilon = 5"), "privacy", "per release is above 2"),
    (("budget_epsilon = 5", "budget_epsilon = 50"), "privacy", "budget_epsilon 50"),
    (("min_contributors = 1000", "min_contributors = 5"), "privacy", "below 10"),
    (("epsilon = 0.5", "epsilon = 0.001"), "utility", "wider than the whole value range"),
    (("window_seconds = 86400", "window_seconds = 60"), "utility", "within a day"),
])
def test_settings_that_give_little_privacy_or_utility_are_flagged(change, kind, words) -> None:
    found = messages(policy_from(GOOD.replace(*change)))
    assert any(k == kind and words in m for k, m in found), found


def test_delta_above_one_over_the_reports_is_flagged() -> None:
    policy = policy_from('kind = "count"\nscheme = "paillier"\nmin_contributors = 1000\n'
                         'window_seconds = 86400\nprivacy = { mechanism = "gaussian", '
                         'epsilon = 0.5, delta = 5e-4, budget_epsilon = 5 }')
    assert any("at least 1/5000" in m for _, m in messages(policy, 5000))
    assert not any("1/1000 " in m for _, m in messages(policy, 1000) if "delta 0.0005" in m)


def test_demo_vector_is_flagged_as_carrying_no_information_at_k() -> None:
    found = messages(DEMO["feature_minutes"])
    assert any(k == "utility" and "wider than the whole value range" in m for k, m in found)


SAMPLE_POLICIES = {p.name: p for p in load_policies_toml("""
[metrics.seconds]
kind = "sum"
scheme = "paillier"
lower = 0
upper = 10
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 10 }

[metrics.vec]
kind = "vector"
scheme = "ckks"
dimension = 2
lower = 0
upper = 1
privacy = { mechanism = "laplace", epsilon = 1.0, budget_epsilon = 10 }

[metrics.hist]
kind = "histogram"
scheme = "paillier"
buckets = [0, 1, 2]
privacy = { mechanism = "gaussian", epsilon = 1.0, delta = 1e-7, budget_epsilon = 10 }
""")}


def test_sample_rows_are_read_per_metric() -> None:
    sample = read_sample("metric,value\nseconds,5\nvec,0.5,1\n\nseconds,20\nhist,7\n",
                         SAMPLE_POLICIES)
    assert sample == {"seconds": [[5.0], [20.0]], "vec": [[0.5, 1.0]], "hist": [[7.0]]}


@pytest.mark.parametrize(("text", "words"), [
    ("", "header"),
    ("seconds,5\n", "header"),
    ("metric,value\nnope,5\n", "line 2: metric 'nope'"),
    ("metric,value\nseconds,five\n", "line 2: values must be numbers"),
    ("metric,value\nseconds,nan\n", "finite"),
    ("metric,value\nseconds,1\nvec,1\n", "line 3: metric 'vec' needs 2"),
    ("metric,value\n", "no values"),
])
def test_bad_samples_are_refused_with_the_line(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        read_sample(text, SAMPLE_POLICIES)


def test_clipping_bias_is_the_clipped_minus_the_raw_truth() -> None:
    policy = SAMPLE_POLICIES["seconds"]
    values = [[5.0], [20.0], [30.0], [-4.0]]
    assert raw_truth(policy, values) == [51.0]
    sim = simulate(policy, values, releases=20)
    assert sim.clipping_bias == (5 + 10 + 10 + 0 - 51.0,)
    assert sim.clipped_share == 0.75
    assert sim.raw == (51.0,)


def test_histogram_values_outside_the_edges_count_as_clipped() -> None:
    policy = SAMPLE_POLICIES["hist"]
    values = [[0.5], [1.5], [7.0], [-1.0]]
    assert raw_truth(policy, values) == [1.0, 1.0]
    sim = simulate(policy, values, releases=5)
    assert sim.clipping_bias == (1.0, 1.0)  # -1 goes to the first bucket, 7 to the last
    assert sim.clipped_share == 0.5


def test_simulated_releases_are_unbiased_and_covered_without_clipping() -> None:
    policy = SAMPLE_POLICIES["vec"]
    sim = simulate(policy, [[0.0, 1.0]] * 40, releases=400)
    assert sim.clipping_bias == (0.0, 0.0)
    sd = math.sqrt(2) * noise_plan(policy).scale  # the laplace noise's standard deviation
    assert all(abs(error) <= 6 * sd / math.sqrt(400) for error in sim.mean_error)
    assert abs(sim.coverage - 0.95) <= 0.06
    assert sim.half_width == accuracy(policy, 40).half_width


def test_rounding_to_the_precision_counts_as_encoding_bias() -> None:
    # precision 1: 0.25 rounds to 0 and 0.75 to 1, 40 times each
    sim = simulate(SAMPLE_POLICIES["vec"], [[0.25, 0.75]] * 40, releases=3)
    assert sim.clipping_bias == (-10.0, 10.0)
    assert sim.clipped_share == 0


def test_simulate_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidInput):
        simulate(SAMPLE_POLICIES["seconds"], [[1.0]], releases=0)
    with pytest.raises(InvalidInput):
        simulate(SAMPLE_POLICIES["seconds"], [], releases=3)


def test_lifetime_states_what_the_ledger_pays() -> None:
    gaussian, pure = lifetime(DEMO["session_seconds"]), lifetime(DEMO["app_opened"])
    assert gaussian.ledger_releases == gaussian.zcdp_releases  # zCDP is the tighter one
    assert pure.ledger_releases == pure.basic_releases == 48  # a pure budget stays basic
    assert gaussian.budget_period == pure.budget_period == 0  # the demos' lifetime budgets
    # a laplace budget that grants a delta turns to zCDP once that pays more releases
    opened = DEMO["app_opened"]
    generous = dataclasses.replace(opened, privacy=dataclasses.replace(
        opened.privacy, budget_epsilon=200.0, budget_delta=1e-6))
    life = lifetime(generous)
    assert life.zcdp_releases is not None and life.ledger_releases == life.zcdp_releases > 200
