# The karpor gateway image: the package and its dependencies, nothing else.
#   docker build -t karpor:0.1.0 .
#   docker run -p 8443:8443 -v /etc/karpor:/etc/karpor:ro -v karpor-state:/var/lib/karpor \
#       karpor:0.1.0 --config /etc/karpor/karpor.yaml
# On Kubernetes: etc/kubernetes (README.md, "Running on Kubernetes").
FROM python:3.11-slim AS build
WORKDIR /src
# only what the package is built from (not a developer's .venv, build/ or caches)
COPY setup.cfg pyproject.toml README.md ./
COPY karpor karpor
COPY twisted twisted
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/karpor --create-home karpor
COPY --from=build /wheels /wheels
# Twisted's plugin cache is written now, as root: at run time the root file
# system may be read-only (etc/kubernetes mounts it so).
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
USER 10001
WORKDIR /var/lib/karpor
EXPOSE 8443
# twistd runs the supervisor in the foreground; SIGTERM drains the workers (exit 0).
ENTRYPOINT ["twistd", "-n", "--pidfile=", "karpor"]
CMD ["--config", "/etc/karpor/karpor.yaml"]
