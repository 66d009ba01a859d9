"""The servers the server-side questions measure, started together and always stopped.

A real key-holder and aggregator (``blindsum.server.processes.deployment``: the ``blindsum``
CLI under gunicorn, 3072-bit Paillier, durable SQLite) and, when asked, the plaintext
baseline (``plain_server``), all on 127.0.0.1, all registered with the same policy file.
Each measurement starts its own set on empty stores: SQLite inserts of random report ids
slow down as the table grows, so a figure must not depend on what ran before it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from blindsum.benchmarks import plain_server
from blindsum.benchmarks.http_load import Target
from blindsum.benchmarks.workload import policy_toml
from blindsum.server.processes import Deployment, deployment
from blindsum.shared import codec
from blindsum.shared.manifest import Keyring, Manifest
from blindsum.shared.policy import MetricPolicy
from blindsum.shared.schemes.base import PublicScheme
from blindsum.shared.schemes.paillier import PaillierPublic
from blindsum.shared.signing import parse_identity

# The benchmarks measure capacity, so the aggregator's per-token and per-address request
# limits (default 600 ingest requests a minute per token) are off; nothing else changes.
UNLIMITED = {
    "BLINDSUM_RATE_LIMIT_INGEST": "off",
    "BLINDSUM_RATE_LIMIT_ADMIN": "off",
    "BLINDSUM_RATE_LIMIT_PUBLIC": "off",
}


@dataclass
class Servers:
    deployed: Deployment
    plain: plain_server.PlainServer | None
    manifest: Manifest
    keyring: Keyring
    root: Path

    def policy(self, metric: str) -> MetricPolicy:
        return self.manifest.policy(metric)

    def paillier(self, metric: str) -> PaillierPublic:
        scheme = self.scheme(metric)
        assert isinstance(scheme, PaillierPublic)
        return scheme

    def scheme(self, metric: str) -> PublicScheme:
        return self.keyring.scheme_for(self.policy(metric))

    def encrypted_target(self) -> Target:
        server = self.deployed.server
        return Target(server.url, self.deployed.ingest_token, codec.CBOR, server.verify)

    def plaintext_target(self) -> Target:
        if self.plain is None:
            raise RuntimeError("these servers were started without the plaintext baseline")
        return Target(self.plain.url, self.plain.token, codec.JSON)

    def admin_post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        server = self.deployed.server
        response = requests.post(f"{server.url}{path}", json=body, timeout=600,
                                 verify=server.verify,
                                 headers={"Authorization": f"Bearer {self.deployed.admin_token}"})
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data

    def get(self, path: str) -> dict[str, object]:
        server = self.deployed.server
        response = requests.get(f"{server.url}{path}", timeout=60, verify=server.verify)
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data


@contextlib.contextmanager
def running(root: Path, metrics: Sequence[str], vectors: Sequence[tuple[str, str, int]] = (),
            plain: bool = False, paillier_bits: int = 3072, proven: Collection[str] = (),
            counts: Collection[str] = ()) -> Iterator[Servers]:
    """Start a deployment (and with ``plain`` the plaintext baseline) in a new folder under
    ``root``, with one metric per name (see ``workload.policy_toml``)."""
    root.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="servers-", dir=root))
    policy_file = root / "bench-policies.toml"
    policy_file.write_text(policy_toml(metrics, vectors, proven, counts))
    with contextlib.ExitStack() as stack:
        deployed = stack.enter_context(deployment(
            root / "deployment", [policy_file], paillier_bits=paillier_bits,
            auto_release=False, server_env=UNLIMITED))
        baseline = (stack.enter_context(plain_server.running(root, policy_file))
                    if plain else None)
        server = deployed.server
        document = requests.get(f"{server.url}/v1/manifest", timeout=30,
                                verify=server.verify).json()
        manifest = Manifest.verify(document, parse_identity(deployed.identity))

        def context(key_id: str) -> bytes:
            response = requests.get(f"{server.url}/v1/keys/{key_id}/context", timeout=30,
                                    verify=server.verify)
            response.raise_for_status()
            return response.content

        yield Servers(deployed, baseline, manifest, Keyring(manifest, context), root)
