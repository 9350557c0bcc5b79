"""WebSocket URL routes."""

from django.urls import re_path

from collab.consumers import DocumentConsumer

# Any single path segment reaches the consumer, which refuses bad ids with a clear code.
websocket_urlpatterns = [
    re_path(r"^ws/docs/(?P<doc_id>[^/?#]*)$", DocumentConsumer.as_asgi()),
]
