# podmaster: a container init and process manager for Python services.
#
#   docker build -t podmaster .
#   docker run --rm -p 8080:8080 -p 9191:9191 podmaster
#
# BUILDER_IMAGE must provide cargo >= 1.85 or be Debian trixie (cargo is
# then installed from Debian). If the build context holds a `vendor/`
# directory (`cargo vendor`), crates come from it and the build is offline.
ARG BUILDER_IMAGE=rust:1.85-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim
# The builder's python3-dev version (trixie: 3.13): the runtime needs its libpython.
ARG PYTHON_VERSION=3.13

FROM ${BUILDER_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-dev gcc libc6-dev pkg-config \
 && (command -v cargo >/dev/null || apt-get install -y --no-install-recommends cargo rustc) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# hadolint ignore=SC2016
RUN if [ -d vendor ]; then \
      mkdir -p .cargo && printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n' > .cargo/config.toml; \
    fi \
 && PYO3_PYTHON=/usr/bin/python3 cargo build --release --locked \
 && install -D -m 0755 target/release/podmaster /out/podmaster \
 && install -D -m 0755 target/release/podmaster-worker /out/podmaster-worker

FROM ${RUNTIME_IMAGE}
ARG PYTHON_VERSION
# The embedded interpreter: the same Debian Python the binary was built against.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 "libpython${PYTHON_VERSION}" \

 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /app podmaster
# podmaster (PID 1, no libpython) and podmaster-worker (the Python side),
# side by side: the master finds the worker next to itself.
COPY --from=build /out/podmaster /out/podmaster-worker /usr/local/bin/
COPY examples/hello/hello.py /app/hello.py
COPY docker/podmaster.ini /etc/podmaster/podmaster.ini
WORKDIR /app
USER 10001:10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 9191
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
  CMD ["podmaster", "probe", "http://127.0.0.1:9191/livez"]
ENTRYPOINT ["podmaster"]
CMD ["--ini", "/etc/podmaster/podmaster.ini"]
