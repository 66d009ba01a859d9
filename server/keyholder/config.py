"""The key-holder's configuration: one typed object, loaded in one function."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from blindsum.shared.errors import InvalidConfig

DEFAULT_MAX_BODY = 64 * 1024 * 1024
# Per release token, per worker: a server releases a few windows per metric and period, and
# every release is paid for; the limit stops a flood from burning budgets or CPU.
DEFAULT_RELEASE_RATE = "60/minute"


@dataclass(frozen=True)
class KeyholderConfig:
    data_dir: Path
    passphrase: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    rate_limit_releases: str | None = DEFAULT_RELEASE_RATE


def load_config(
    overrides: Mapping[str, object] | None = None, env: Mapping[str, str] = os.environ
) -> KeyholderConfig:
    """Read BLINDSUM_KEYHOLDER_DATA_DIR, BLINDSUM_KEYSTORE_PASSPHRASE(_FILE) and
    BLINDSUM_RATE_LIMIT_RELEASES (``limits`` notation such as ``60/minute``, or ``off``);
    overrides win.

    Raises:
        InvalidConfig: naming the setting that is missing or wrong.
    """
    values = dict(overrides or {})
    data_dir = values.get("data_dir") or env.get("BLINDSUM_KEYHOLDER_DATA_DIR")
    if not data_dir:
        raise InvalidConfig("key-holder data directory is not set (--data-dir)")
    passphrase = values.get("passphrase") or env.get("BLINDSUM_KEYSTORE_PASSPHRASE")
    passphrase_file = values.get("passphrase_file") or env.get(
        "BLINDSUM_KEYSTORE_PASSPHRASE_FILE"
    )
    if passphrase_file and not passphrase:
        try:
            passphrase = Path(str(passphrase_file)).read_text().strip()
        except OSError as exc:
            raise InvalidConfig(f"cannot read passphrase file: {exc.strerror}") from None
        if not passphrase:
            raise InvalidConfig("passphrase file is empty")
    max_body = values.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or max_body < 1024:
        raise InvalidConfig("max_body_bytes must be an integer of at least 1024")
    rate = values.get("rate_limit_releases",
                      env.get("BLINDSUM_RATE_LIMIT_RELEASES", DEFAULT_RELEASE_RATE))
    return KeyholderConfig(Path(str(data_dir)), str(passphrase) if passphrase else None,
                           max_body, _rate_limit(rate))


def _rate_limit(value: object) -> str | None:
    from limits import parse_many

    text = str(value).strip()
    if not text:  # an empty variable is an unset one, not a way to switch the limit off
        text = DEFAULT_RELEASE_RATE
    if text.lower() in ("off", "none"):
        return None
    try:
        parse_many(text)
    except ValueError:
        raise InvalidConfig(
            f"BLINDSUM_RATE_LIMIT_RELEASES must look like '60/minute' or be 'off', got {text!r}"
        ) from None
    return text
