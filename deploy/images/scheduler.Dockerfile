# The scheduler image: `tessera scheduler` (extender, admission webhook, metrics). The chart runs it next
# to the upstream kube-scheduler image in the same pod.
#   docker build -f deploy/images/scheduler.Dockerfile -t ghcr.io/tessera-gpu/tessera-scheduler:0.1.0 .
# Build context: the repository root.
FROM debian:bookworm AS build
ARG DEBIAN_FRONTEND=noninteractive
COPY deploy/images/build.sh /usr/local/sbin/tessera-build
COPY . /src
RUN /usr/local/sbin/tessera-build /src /out

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
COPY deploy/images/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && grep -v '^#' /tmp/runtime-packages.txt | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /out/usr/local/bin/tessera /usr/local/bin/tessera
# Unprivileged: the scheduler only talks to the API server and serves HTTPS on unprivileged ports.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["scheduler"]
