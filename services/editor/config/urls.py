"""HTTP routes of the editor service."""

from collab import api, pages
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

urlpatterns = [
    path("", pages.index),
    path("d/<str:doc_id>", pages.editor),
    path("api/docs", api.list_documents),
    path("api/docs/<str:doc_id>", api.document_detail),
    path("api/docs/<str:doc_id>/state", api.document_state),
    path("api/docs/<str:doc_id>/updates", api.post_update),
    path("api/tokens", api.issue_user_token),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="collab/login.html"),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
