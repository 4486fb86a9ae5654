# kinetic's container image: the one binary, run as a user other than root, with nothing writable
# but its state directory (/var/lib/kinetic; mount a volume there, or a tmpfs for a throwaway
# kinetic). Built from the repository's root:
#
#   docker build -t kinetic .
#       compiles kinetic in a Rust toolchain image (the `build` stage), then copies it;
#   cargo build --release -p kinetic && docker build --target prebuilt -t kinetic .
#       takes the binary cargo built on this machine instead (its glibc: build on Debian 12
#       (bookworm) or older).
#
# Then, e.g. everything in one process on loopback of the host's network:
#   docker run --read-only --tmpfs /var/lib/kinetic:uid=65532 --network host \
#     -v "$PWD/resources:/etc/kinetic:ro" kinetic up -f /etc/kinetic/
# or, scaled out on PostgreSQL: `kinetic broker|dispatcher|sources --store postgres://…`.

# What every kinetic image runs on: CA certificates for HTTPS deliveries and sources, OpenSSL
# (librdkafka links it), the user, and the state directory.
FROM debian:bookworm-slim AS runtime
RUN { [ -e /etc/ssl/certs/ca-certificates.crt ] && ldconfig -p | grep -q 'libssl\.so\.3'; } \
 || (apt-get update \
     && apt-get install -y --no-install-recommends ca-certificates libssl3 \
     && rm -rf /var/lib/apt/lists/*)
RUN mkdir -p /var/lib/kinetic && chown 65532:65532 /var/lib/kinetic && chmod 0700 /var/lib/kinetic
ENV KINETIC_STATE_DIR=/var/lib/kinetic
WORKDIR /var/lib/kinetic
USER 65532:65532
# The public listener and the admin listener; the serving gateway listens on 8081.
EXPOSE 8080 8070 8081
ENTRYPOINT ["/usr/local/bin/kinetic"]
CMD ["up"]

# The binary cargo built on this machine (target/$PROFILE/kinetic).
FROM runtime AS prebuilt
ARG PROFILE=release
COPY target/${PROFILE}/kinetic /usr/local/bin/kinetic

# kinetic compiled from these sources.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# cmake and the headers librdkafka's build needs.
RUN bash scripts/ensure-build-deps.sh \
 && cargo build --release --locked -p kinetic \
 && cp target/release/kinetic /usr/local/bin/kinetic

FROM runtime
COPY --from=build /usr/local/bin/kinetic /usr/local/bin/kinetic
