"""manage.py issue_token: mint an access token; prints only the token."""

from __future__ import annotations

from typing import Any

from collab_common.tokens import issue_token
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from collab.docids import validate_doc_id
from collab.errors import InvalidDocumentId


class Command(BaseCommand):
    """Sign a token for one document (--doc) or every document with an id prefix (--prefix)."""

    help = "Print a signed access token (JWT) for a document or an id prefix."

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--doc", help="exactly this document id")
        scope.add_argument("--prefix", help="every document id starting with this prefix")
        parser.add_argument("--perm", choices=["read", "write"], default="write")
        parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
        parser.add_argument("--subject", default="cli", help="who the token is for (logged)")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = settings.COLLAB_TOKEN_SECRET
        if not secret:
            raise CommandError("COLLAB_TOKEN_SECRET must be set to sign tokens")
        if options["ttl"] < 1:
            raise CommandError("--ttl must be a positive number of seconds")
        if options["doc"] is not None:
            try:
                validate_doc_id(options["doc"])
            except InvalidDocumentId as error:
                raise CommandError(error.detail) from None
        token = issue_token(
            secret,
            subject=options["subject"],
            permission=options["perm"],
            doc=options["doc"],
            prefix=options["prefix"],
            ttl_seconds=options["ttl"],
        )
        self.stdout.write(token)
