# pullthrough container image: the release binary (no debug info, no symbol table: see
# [profile.release] in Cargo.toml) on distroless cc, which holds glibc, libgcc and the CA
# certificates and nothing else: no shell, no package manager. Runs as non-root (65532).
# Build: docker build -t pullthrough:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a change to src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src config \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin pullthrough \
 && rm -rf src target/release/pullthrough target/release/deps/pullthrough-* target/release/deps/libpullthrough-* \
    target/release/.fingerprint/pullthrough-*
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin pullthrough \
 && install -D -m 0755 target/release/pullthrough /out/pullthrough \
 && mkdir -p /out/cache

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pullthrough /usr/local/bin/pullthrough
# An empty cache directory owned by the nonroot user (65532); mount a volume here.
COPY --from=build --chown=65532:65532 /out/cache /var/cache/pullthrough
USER 65532:65532
EXPOSE 5000 5001
# The embedded default config listens on loopback; in a container, listen on all addresses.
ENTRYPOINT ["/usr/local/bin/pullthrough"]
CMD ["serve", "--listen", "0.0.0.0:5000", "--admin-listen", "0.0.0.0:5001", "--cache-dir", "/var/cache/pullthrough"]
