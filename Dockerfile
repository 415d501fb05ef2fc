# Builds both binaries; docker-compose.yml runs one image as the API and as workers.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wharf-api --bin wharf-worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/wharf-api /src/target/release/wharf-worker /usr/local/bin/
EXPOSE 8080
CMD ["wharf-api"]
