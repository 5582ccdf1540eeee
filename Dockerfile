# pipeline serve in a container: a slim Python base, a non-root user, the Silero VAD model inside
# (it ships in the wheel), `pipeline serve` as the entry point and a HEALTHCHECK on /healthz.
#   docker build -t pipeline-agent .
#   docker run -p 8080:8080 -e XAI_API_KEY -e PIPELINE_SERVE_TOKEN pipeline-agent
# Arguments after the image name replace CMD: pipelines file, pipeline name, serve options.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
# a C compiler for the hot path's kernels (setup.py); the image that runs needs none
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIPELINE_REQUIRE_EXTENSIONS=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY stages ./stages
COPY benchmarks ./benchmarks
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

FROM python:${PYTHON}-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin agent
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "from importlib.resources import files; m = files('stages.vad') / 'data' / 'silero_vad.onnx'; assert m.is_file(), m"
WORKDIR /app
COPY pipelines.yaml ./
COPY examples ./examples
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pipeline", "serve"]
CMD ["pipelines.yaml", "phone", "--host", "0.0.0.0", "--port", "8080", "--token-parameter"]
