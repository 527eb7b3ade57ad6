# brain: etcd v3 API server for Kubernetes (embedded LevelDB by default).
# Not built on the project's machines (no container engine there): kept minimal.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY brain ./brain
COPY engines ./engines
COPY bench ./bench
RUN python -m venv /opt/brain && /opt/brain/bin/pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/brain /opt/brain
RUN useradd --system --uid 65532 --home-dir /var/lib/brain brain \
    && mkdir -p /var/lib/brain && chown brain /var/lib/brain
USER 65532
ENV PATH=/opt/brain/bin:$PATH
VOLUME ["/var/lib/brain"]
EXPOSE 2379 2381
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:2381/health', timeout=2).status == 200 else 1)"
ENTRYPOINT ["brain", "serve", "--data-dir", "/var/lib/brain/data", \
            "--listen-client-urls", "http://0.0.0.0:2379", "--listen-metrics-urls", "http://0.0.0.0:2381"]
