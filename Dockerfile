# The autotune job image: one static binary in an empty, non-root image.
#
#   docker build -t IMAGE .                      # full build (needs the rust image)
#   buildah bud --target prebuilt -t IMAGE CTX   # CTX holds a static `autotune` built outside
#
# TLS roots are compiled into the binary (webpki-roots), so the image needs no CA bundle.

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
USER 65532:65532
ENTRYPOINT ["/autotune", "run"]

# The default (last) stage: what `docker build .` and `gcloud builds submit` produce.
FROM scratch AS runtime
COPY --from=build /autotune /autotune
USER 65532:65532
ENTRYPOINT ["/autotune", "run"]
