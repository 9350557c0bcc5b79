"""Load tests of the collab services: a reusable harness and the scenarios built on it."""
