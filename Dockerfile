# The image k8s/ and slurm/ refer to (docs/scale-out.md, "The container image"): ppdenoise
# and the task script every tile or slice runs, as a non-root user. Build from the
# repository's root:
#
#   docker build -t REGISTRY/ppdenoise:TAG .
#
# tests/suite/house/container_recipe.rs checks this recipe on machines that cannot build images: what each
# COPY takes exists, the binary's libraries come from the runtime stage's packages, the paths
# and user the manifests name are the ones made here, and the same file tree assembled
# from this machine's build runs.

# Build stage: the Rust toolchain of the crate registry's official image, with cmake and g++
# for the codecs' C and C++ sources (CharLS, libjpeg-turbo, OpenJPEG).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ppdenoise

# Runtime stage: the binary's shared libraries (libc6, libgcc-s1, libstdc++6), the CA
# certificates an archive's TLS may need, and what the task script runs (bash, python3 for
# its JSON, hostname, coreutils).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libc6 libgcc-s1 libstdc++6 ca-certificates bash python3 hostname coreutils \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin ppdenoise
COPY --from=build /src/target/release/ppdenoise /usr/local/bin/ppdenoise
COPY --from=build /src/slurm/serve.sbatch /usr/local/bin/ppdenoise-task
RUN chmod 0755 /usr/local/bin/ppdenoise /usr/local/bin/ppdenoise-task
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ppdenoise"]
CMD ["--help"]
