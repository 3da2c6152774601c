"""`python -m orchestrator.cli` (how tests and the load test start `serve` in a subprocess)."""

from orchestrator.cli import main

main()
