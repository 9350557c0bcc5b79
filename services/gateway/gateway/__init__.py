"""The WebSocket gateway: authentication, limits and document affinity in front of editors."""
