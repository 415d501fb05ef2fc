# Builds both binaries; docker-compose.yml runs one image as the API and as workers.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wharf-api --bin wharf-worker

FROM debian:bookworm-slim
# curl: the compose health checks (API /healthz, worker /healthz on WHARF_METRICS_LISTEN).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/wharf-api /src/target/release/wharf-worker /usr/local/bin/
EXPOSE 8080 9100
CMD ["wharf-api"]
