"""The OpenAI-compatible REST gateway (`app.create_app`); its wire models are in `orchestrator.protocol`."""
