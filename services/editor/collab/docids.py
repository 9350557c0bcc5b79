"""Document identifiers: 1-128 characters of [A-Za-z0-9._~-]."""

from __future__ import annotations

import hashlib
import re

from collab.errors import InvalidDocumentId

DOC_ID_PATTERN = r"[A-Za-z0-9._~-]{1,128}"
_DOC_ID = re.compile(DOC_ID_PATTERN)


def validate_doc_id(doc_id: str) -> str:
    """Return `doc_id` unchanged, or raise InvalidDocumentId saying what is allowed."""
    if not _DOC_ID.fullmatch(doc_id):
        raise InvalidDocumentId("document ids are 1-128 characters of letters, digits and . _ ~ -")
    return doc_id


def group_name(prefix: str, doc_id: str) -> str:
    """The channel-layer group of a document.

    Group names allow only [A-Za-z0-9._-] and fewer than 100 characters, so the id is
    hashed; messages carry the id itself, so a collision could never mix documents.
    """
    digest = hashlib.blake2b(doc_id.encode(), digest_size=16).hexdigest()
    return f"{prefix}.doc.{digest}"
