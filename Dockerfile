# The karpor gateway image: the package and its dependencies, nothing else.
#   docker build -t karpor:0.1.0 .
#   docker run -p 8443:8443 -v /etc/karpor:/etc/karpor:ro -v karpor-state:/var/lib/karpor \
#       karpor:0.1.0 --config /etc/karpor/karpor.yaml
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/karpor --create-home karpor
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /var/lib/karpor
EXPOSE 8443
# twistd runs the supervisor in the foreground; SIGTERM drains the workers (exit 0).
ENTRYPOINT ["twistd", "-n", "--pidfile=", "karpor"]
CMD ["--config", "/etc/karpor/karpor.yaml"]
