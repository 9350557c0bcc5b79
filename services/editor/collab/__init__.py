"""Real-time collaboration on Yjs documents over Django Channels."""
