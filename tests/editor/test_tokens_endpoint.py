"""Logged-in Django users get document tokens from POST /api/tokens."""

from __future__ import annotations

import json

import pytest
from collab_common.tokens import verify_token
from django.contrib.auth.models import Permission, User

SECRET = "endpoint-secret-" + "y" * 40


@pytest.fixture(autouse=True)
def token_secret(settings):
    settings.COLLAB_TOKEN_SECRET = SECRET


def post(client, body):
    return client.post("/api/tokens", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_anonymous_visitors_get_401(client):
    response = post(client, {"doc": "notes"})
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthenticated"


@pytest.mark.django_db
def test_users_need_the_document_permissions(client):
    user = User.objects.create_user("ana", password="pw")
    client.force_login(user)
    assert post(client, {"doc": "notes", "perm": "read"}).status_code == 403

    user.user_permissions.add(Permission.objects.get(codename="view_document"))
    user = User.objects.get(pk=user.pk)  # drop the permission cache
    client.force_login(user)
    response = post(client, {"doc": "notes", "perm": "read"})
    assert response.status_code == 200
    grant = verify_token(SECRET, response.json()["token"])
    assert (grant.doc, grant.permission, grant.subject) == ("notes", "read", f"user:{user.pk}")
    assert post(client, {"doc": "notes", "perm": "write"}).status_code == 403


@pytest.mark.django_db
def test_superusers_get_write_tokens_and_bad_requests_are_explained(admin_client):
    response = post(admin_client, {"doc": "notes"})
    assert response.status_code == 200
    assert verify_token(SECRET, response.json()["token"]).can_write
    bad = post(admin_client, {"doc": "not a valid id"})
    assert bad.status_code == 400 and "document ids" in bad.json()["message"]
    assert post(admin_client, {"doc": "notes", "perm": "admin"}).status_code == 400
