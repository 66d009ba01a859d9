"""What the fault tests share besides their fixtures (a name no other test folder uses)."""

from __future__ import annotations

from pathlib import Path

POLICIES = [Path(__file__).parent / "fault_policies.toml"]
