# The fission image: the one `fission` binary (CLI and every server role) with the built-in
# Node.js and Python runtimes and what the sandbox needs. The chart starts it as
# `fission server --role controller|router|executor`.
#
#   docker build -t fission-rs/fission:0.1.0 .

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p fission \
 && install -D target/release/fission /out/fission

# The runtimes' dependencies (npm ci, pip --target), as environments/setup.sh installs them.
FROM node:22-bookworm-slim AS node
FROM node AS runtimes
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY environments/nodejs /environments/nodejs
COPY environments/python /environments/python
RUN cd /environments/nodejs && npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && python3 -m pip install --quiet --no-deps --break-system-packages \
      --target /environments/python/vendor -r /environments/python/requirements.txt \
 && rm -rf /environments/nodejs/test /environments/nodejs/bench /environments/python/tests /environments/python/bench

# --- the fetcher sidecar of function pods (the chart's executor.fetcherImage) ----------------
#   docker build --target fetcher -t fission-rs/fetcher:0.1.0 .
FROM debian:bookworm-slim AS fetcher
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/fission /usr/bin/fission
ENTRYPOINT ["/usr/bin/fission", "fetcher"]

# --- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim
# bubblewrap, nftables and iproute2: each function instance's sandbox (--sandbox bwrap);
# python3: the Python runtime and builder; ca-certificates: https archive URLs.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      bubblewrap nftables iproute2 python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm
COPY --from=runtimes /environments /usr/share/fission/environments
COPY --from=build /out/fission /usr/bin/fission
ENV FISSION_ENVIRONMENTS_DIR=/usr/share/fission/environments \
    FISSION_DATA_DIR=/var/lib/fission
VOLUME /var/lib/fission
# 31313: controller, 31314: router (the all-in-one defaults); the chart's roles use 8888/8889.
EXPOSE 31313 31314 8888 8889
ENTRYPOINT ["/usr/bin/fission"]
CMD ["server", "--controller-listen=0.0.0.0:31313", "--router-listen=0.0.0.0:31314"]
