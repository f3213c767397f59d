# wsfault — WebSocket chaos proxy, echo backend, load client and admin CLI in
# one binary.
#
#   docker build -t wsfault:local .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8474:8474 wsfault:local \
#       proxy --listen 0.0.0.0:8080 --upstream host.docker.internal:9000 --admin 0.0.0.0:8474
#
# No image can be pulled where there is no registry: build the base with
# docker/build-base-image.sh and a host binary with docker/Dockerfile.prebuilt,
# or point the two build args below at images you already have locally.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build -----------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The context is filtered by .dockerignore (no target/, no .git).
COPY . .
RUN cargo build --release --locked --bin wsfault \
 && cp target/release/wsfault /usr/local/bin/wsfault \
 && strip --strip-debug /usr/local/bin/wsfault \
 && /usr/local/bin/wsfault --version

# ---- runtime ---------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wsfault \
 && useradd --system --uid 10001 --gid wsfault --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin wsfault
COPY --from=build /usr/local/bin/wsfault /usr/local/bin/wsfault
USER 10001:10001
# 8080 proxy listener, 8474 admin API (Toxiproxy's port), 9000 echo backend.
EXPOSE 8080 8474 9000
# The admin API of `wsfault proxy` (GET /healthz, exempt from --admin-token).
# Set WSFAULT_ADMIN to move it; containers running echo or load override or
# disable this healthcheck (see docker-compose.yml).
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["wsfault", "ctl", "--timeout", "2s", "health"]
ENTRYPOINT ["wsfault"]
CMD ["--help"]
