# The agent image: `tessera agent` (device plugin, slice monitor, metrics) plus libtessera.so, which the
# chart's init container copies to the host (<hostDir>/lib/libtessera.so) so the agent can mount it into
# every GPU container together with a generated /etc/ld.so.preload.
#   docker build -f deploy/images/agent.Dockerfile -t ghcr.io/tessera-gpu/tessera-agent:0.1.0 .
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
# libtessera.so depends on libc only (it is loaded into arbitrary CUDA applications); the agent never
# loads it itself.
COPY --from=build /out/usr/local/lib/tessera/libtessera.so /usr/local/lib/tessera/libtessera.so
# Runs as root: it writes root-owned slice configs on the host and talks to the kubelet's sockets.
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["agent"]
