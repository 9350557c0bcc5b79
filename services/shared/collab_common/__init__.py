"""Code both services share: environment readers and access tokens."""
