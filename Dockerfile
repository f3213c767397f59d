# wsfault — WebSocket chaos proxy, echo backend, load client and admin CLI in
# one binary.
#
#   docker build -t wsfault:local .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8474:8474 wsfault:local \
#       proxy --listen 0.0.0.0:8080 --upstream host.docker.internal:9000 --admin 0.0.0.0:8474
#
# Build args:
#   RUST_IMAGE     the build stage: any image with cargo, rustc and a C
#                  compiler/linker (default rust:1-bookworm)
#   RUNTIME_IMAGE  the runtime: any glibc-2.36-or-newer base with a shell and
#                  groupadd/useradd (default debian:bookworm-slim); nothing is
#                  installed into it, so it needs no network either
#
# No image can be pulled where there is no registry: make both locally with
# docker/build-base-image.sh (wsfault-base:bookworm for RUNTIME_IMAGE; --rust
# makes wsfault-rust:bookworm, this machine's toolchain, for RUST_IMAGE), or
# build a host binary into docker/Dockerfile.prebuilt. Crates come from
# crates.io, or from wherever RUST_IMAGE's $CARGO_HOME/config.toml points
# (a mirror, or `cargo vendor` output as in tests/dockerfile_build.rs).
#
# The runtime image holds the stripped release binary (~12 MB) on the slim
# base and nothing else: wss:// upstreams are verified against the Mozilla
# roots compiled into wsfault (plus SSL_CERT_FILE), so no ca-certificates.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build -----------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# No debug info (Cargo.toml's release profile keeps line tables for
# profiling), stripped symbols: the binary shrinks from ~95 MB to ~12 MB.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_INCREMENTAL=0

# The image needs the wsfault binary only: the manifest is built without its
# [[bench]], [[test]] and [[example]] tables, from Cargo.toml, Cargo.lock and
# src/ (nothing else of the context is copied; add it here if a build script
# or include_str! ever needs more).
#
# 1. The dependencies, in a layer keyed on Cargo.toml and Cargo.lock only:
#    a change to src/ rebuilds wsfault, not its ~170 crates. They are built
#    against empty targets; then every trace of that stub crate goes, so
#    step 2 compiles the real one whatever the sources' timestamps.
COPY Cargo.toml Cargo.lock ./
RUN awk '/^\[/ { skip = /^\[\[(bench|test|example)\]\]/ } !skip' Cargo.toml > Cargo.bin.toml \
 && mv Cargo.bin.toml Cargo.toml \
 && mkdir src && echo 'fn main() {}' > src/main.rs && : > src/lib.rs \
 && cargo build --release --locked --bin wsfault \
 && rm -rf src \
 && find target/release -name '*wsfault*' -prune -exec rm -rf {} +

# 2. wsfault itself; target/ leaves this layer once the binary is out.
COPY src/ src/
RUN cargo build --release --locked --bin wsfault \
 && install -m 0755 target/release/wsfault /usr/local/bin/wsfault \
 && rm -rf target \
 && wsfault --version

# ---- runtime ---------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 wsfault \
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
