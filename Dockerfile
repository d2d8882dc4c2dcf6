# syntax=docker/dockerfile:1
# acctstate container image: `docker build -t acctstate .` from the repository root.
# Used by Railway (deploy/railway/railway.toml) and usable anywhere Docker runs.

# ---- build ----------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# C toolchain for aws-lc-rs (rustls/sqlx/reqwest crypto) and other -sys crates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build

# Dependencies first, against stub sources, so this layer is reused until Cargo.lock changes.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names the bench targets and the workspace's client crate, so their files must exist
# for the manifest to load.
COPY benches ./benches
COPY clients/rust ./clients/rust
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin acctstate \
 && rm -rf src

# The real sources. migrations/ is embedded by sqlx::migrate! at compile time; no .sqlx/ or
# SQLX_OFFLINE is needed (queries are checked at run time). touch: COPY keeps the files' old
# modification times, which could make cargo keep the stub build.
COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
RUN touch build.rs src/main.rs src/lib.rs \
 && cargo build --release --locked --bin acctstate

# ---- runtime --------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 acctstate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin acctstate
COPY --from=builder /build/target/release/acctstate /usr/local/bin/acctstate
WORKDIR /app
COPY --from=builder /build/config /app/config

# Listen on all interfaces inside the container; on Railway the injected PORT wins
# (the daemon then listens on 0.0.0.0:$PORT). JSON log lines on stdout.
ENV ACCTSTATE__HTTP__LISTEN=0.0.0.0:8080 \
    ACCTSTATE__LOG__FORMAT=json
EXPOSE 8080
USER 10001:10001
# SIGTERM starts the drain (shutdown.drain_timeout_secs, default 10 s): give the platform a
# longer stop timeout (docker stop -t 30, Railway drainingSeconds = 30).
STOPSIGNAL SIGTERM
ENTRYPOINT ["acctstate"]
CMD ["run"]
