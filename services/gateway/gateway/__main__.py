"""`python -m gateway`: run the gateway with settings from the environment."""

from gateway.server import main

main()
