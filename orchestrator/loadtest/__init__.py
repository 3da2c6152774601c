"""`orchestrator loadtest`: gateway overhead against an instant loopback upstream (vs LiteLLM)."""
