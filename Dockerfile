# The autotune job image: one static binary in an empty, non-root image.
#
#   docker build -t IMAGE .                      # full build (needs the rust image)
#   buildah bud --target prebuilt -t IMAGE CTX   # CTX holds a static `autotune` built outside
#
# The job's own HTTPS client has its TLS roots compiled in (webpki-roots); Google's credentials
# library (token exchange for workload identity federation, impersonation, gcloud users) reads
# the system's, so the image carries a CA bundle at the standard path.

FROM docker.io/library/rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p autotune --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/autotune /autotune

# The same runtime stage, from a binary built outside the image (CI here cannot pull images).
FROM scratch AS prebuilt
COPY autotune /autotune
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/autotune", "run"]

# The default (last) stage: what `docker build .` and `gcloud builds submit` produce.
FROM scratch AS runtime
COPY --from=build /autotune /autotune
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/autotune", "run"]
