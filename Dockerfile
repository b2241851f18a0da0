# syntax=docker/dockerfile:1
# Builds the moq relay. Used by the optional `relay` service in docker-compose.yml
# (`docker compose --profile relay up -d --build`), or on its own:
#   docker build -t moq-relay:dev .
#   docker run --rm -p 4443:4443/udp -p 4443:4443/tcp -p 9101:9101 \
#     -e MOQ_LISTEN=0.0.0.0:4443 -e MOQ_TLS_GENERATE=localhost -e MOQ_OPS_LISTEN=0.0.0.0:9101 moq-relay:dev

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds; the binary is copied out of
# the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p moq-relay \
    && install -D -m 0755 target/release/moq-relay /out/moq-relay

# Same Debian release as the build image, so the glibc the binary links against is present.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin moq
COPY --from=build /out/moq-relay /usr/local/bin/moq-relay
USER 10001:10001
# 4443: QUIC/WebTransport (UDP) and the HTTP endpoints (TCP); 9101: ops listener (/metrics, /health).
EXPOSE 4443/udp 4443/tcp 9101/tcp
ENV MOQ_LISTEN=0.0.0.0:4443 \
    MOQ_OPS_LISTEN=0.0.0.0:9101
ENTRYPOINT ["/usr/local/bin/moq-relay"]
