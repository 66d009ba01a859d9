"""kill -9 of the key-holder while releases run: no window is decrypted twice, nothing is
released twice, and every debit is accounted for.

Release requests go straight to the key-holder (as the server sends them) for many closed
windows, one after another, and the key-holder's process group is killed mid-way. After a
restart every request is sent again. Pay-first releases allow exactly three outcomes per
window: released (the same stored document to every repeat, never a fresh noise draw),
interrupted (paid and consumed by the killed process, never decrypted again; settled when
the key-holder restarts), or never reached (released now, for the first time). The budget
spent is one release per consumed window, and the audit log holds one payment per window.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sqlite3
import threading
import time

import pytest
import requests
from fault_kit import POLICIES

from blindsum.server.processes import deployment, start_service
from blindsum.shared import codec
from blindsum.shared.codec import ReleaseRequest
from blindsum.shared.encoding import encode
from blindsum.shared.manifest import Manifest, slot_spec
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import parse_identity

WINDOWS = 30
HOUR = 3600


def _requests(manifest: Manifest) -> list[ReleaseRequest]:
    policy = manifest.policy("taps")
    key = manifest.active_key("paillier")
    public = PaillierPublic.from_json(key.public)
    spec = slot_spec(policy)
    reports = [public.load(public.encrypt(encode(policy, 1), spec), spec) for _ in range(3)]
    aggregate = tuple(public.dump(public.add_many(reports)))
    now_window = policy.window_start(time.time())
    return [ReleaseRequest("taps", policy.version, now_window - (i + 1) * HOUR, key.key_id, 3,
                           secrets.token_bytes(32), aggregate) for i in range(WINDOWS)]


def _post(url: str, token: str, body: ReleaseRequest) -> requests.Response:
    return requests.post(f"{url}/v1/releases", data=codec.dumps(body.to_wire()),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": codec.JSON}, timeout=30)


def test_kill_9_of_the_keyholder_during_releases_decrypts_nothing_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("kill-keyholder")
    with deployment(root, POLICIES) as dep:
        db_path = dep.keyholder_dir / "keyholder.db"
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn, conn:
            # registered two days ago, so the windows below are in the release horizon
            conn.execute("UPDATE policies SET added_at = added_at - 172800")
            conn.execute("UPDATE keys SET created_at = created_at - 172800")
        manifest = Manifest.verify(requests.get(f"{dep.keyholder.url}/v1/manifest",
                                                timeout=30).json(), parse_identity(dep.identity))
        bodies = _requests(manifest)
        first: dict[int, requests.Response] = {}

        def fire() -> None:
            for index, body in enumerate(bodies):
                try:
                    first[index] = _post(dep.keyholder.url, dep.release_token, body)
                except requests.RequestException:
                    return  # the key-holder is gone

        thread = threading.Thread(target=fire, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while len(first) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(dep.keyholder.process.pid, signal.SIGKILL)
        dep.keyholder.process.wait(30)
        thread.join(30)
        answered_before = dict(first)
        port = int(dep.keyholder.url.rsplit(":", 1)[1])
        dep.keyholder = start_service(
            "keyholder-after-kill",
            ["keyholder", "serve", "--data-dir", str(dep.keyholder_dir), "--port", str(port)],
            port, root, {k: v for k, v in dep.env.items() if k.startswith("BLINDSUM_")})
        again = [_post(dep.keyholder.url, dep.release_token, body) for body in bodies]
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
            states = dict(conn.execute("SELECT window, state FROM releases WHERE metric = 'taps'"))
            paid = [row[0] for row in conn.execute(
                "SELECT detail FROM audit WHERE event = 'release-paid'")]
        budget = requests.get(f"{dep.keyholder.url}/v1/budget", timeout=30,
                              headers={"Authorization": f"Bearer {dep.release_token}"}).json()
    assert 5 <= len(answered_before) < WINDOWS  # the kill landed mid-way
    for index, body in enumerate(bodies):
        state, answer = states.get(body.window), again[index]
        before = answered_before.get(index)
        if before is not None and before.status_code == 201:
            # answered before the kill: the same document again, no second noise draw
            assert state == "released" and answer.status_code == 200
            assert answer.json() == before.json()
        elif state == "interrupted":
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == "release-interrupted"
        else:
            assert state == "released" and answer.status_code in (200, 201), answer.text
    assert not [w for w, s in states.items() if s == "paid"]  # settled at restart
    assert len(states) == WINDOWS and len(paid) == WINDOWS  # one payment per window
    (taps,) = [m for m in budget["metrics"] if m["metric"] == "taps"]
    assert taps["releases"] == WINDOWS
    outcomes = list(states.values())
    print(f"kill -9 of the key-holder: {len(answered_before)} of {WINDOWS} releases answered "
          f"before the kill; after the restart {outcomes.count('released')} released, "
          f"{outcomes.count('interrupted')} interrupted (paid, never decrypted), "
          f"{len(paid)} payments, {taps['releases']} releases booked")
