# The orchestrator gateway (`orchestrator serve`), configured through ORCHESTRATOR_* variables.
FROM python:3.12-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY experts ./experts
COPY orchestrator ./orchestrator
COPY routers ./routers
COPY store ./store
# torch is pinned to 2.13.0; PyTorch's CPU index gives its CPU wheel (PyPI's is a CUDA build).
# the ray extra: ORCHESTRATOR_BATCH_ENGINE=ray (batch jobs' expert groups on a Ray cluster)
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[ray]" \
 && useradd --create-home --uid 1000 orchestrator \
 && install -d -o orchestrator -g orchestrator /home/orchestrator/trace-journal
COPY deploy ./deploy
USER orchestrator
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"
CMD ["orchestrator", "serve", "--host", "0.0.0.0", "--port", "8000"]
