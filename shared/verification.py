"""Check a published result offline against the key-holder identity you pinned.

A single-key result is the key-holder's Ed25519 signature over its payload. A threshold
result (``shared/threshold/release.py``) carries the key-holder's signed statement, both
parties' proven partial decryptions of the noised aggregate and the payload; checking it
establishes that the value is exactly the decryption, post-processed, with no party's word
taken for it. Either way the answer is the typed payload, read only after it verified.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .codec import ReleaseResult
from .errors import InvalidInput, InvalidProof
from .signing import verify_document
from .threshold.release import PUBLISHED_FORMAT, verify_published


def verify_result(document: object, pinned: Ed25519PublicKey) -> ReleaseResult:
    """The verified payload of a published result's ``document`` (or of a whole entry of
    ``GET /v1/published``, whose ``document`` field is used and nothing else).

    Raises:
        ManifestError: not signed by ``pinned`` (or malformed as a signed document).
        InvalidProof: a threshold result whose proofs or value do not check out, or a
            payload that is not a well-formed release result.
    """
    if isinstance(document, Mapping) and isinstance(document.get("document"), Mapping):
        document = document["document"]
    if isinstance(document, Mapping) and document.get("format") == PUBLISHED_FORMAT:
        payload = verify_published(document, pinned)
        threshold = True
    else:
        payload = verify_document(document, pinned, "release result")
        threshold = False
    try:
        result = ReleaseResult.from_json(payload)
    except InvalidInput as exc:
        raise InvalidProof(f"the signed payload is not a release result: {exc.detail}") from None
    if result.threshold != threshold:
        # A single-key signature over a payload claiming threshold decryption would
        # otherwise be shown as proven when no proof was checked.
        raise InvalidProof("the payload claims threshold decryption but carries no proofs"
                           if result.threshold else
                           "a threshold result's payload must say threshold")
    if not threshold and result.noise_parties not in ((), ("keyholder",)):
        # only a threshold statement proves the server's noise is in what was decrypted
        raise InvalidProof("a single-key result cannot claim noise by the server")
    return result
