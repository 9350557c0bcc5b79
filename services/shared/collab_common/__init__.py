"""Code both services share: environment readers, access tokens, logging, and the server
side of every connection (WebSocket protocol, request-head deadline, message rate)."""
