# The gateway's own image: buildgw, the kaniko executor built from the
# version pinned in go.mod, and buildctl-lite, all static, on a small
# Debian runtime that runs rootless builds as an unprivileged user.
#
# Base images are arguments so the image can be built against a mirror:
#   docker build --build-arg GO_IMAGE=mirror.example.com/golang:1.26-bookworm \
#                --build-arg RUNTIME_IMAGE=mirror.example.com/debian:bookworm-slim \
#                --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) .
# With a vendor/ directory in the context (`go mod vendor`) the build needs
# no network for Go modules.
#
# Running it needs user namespaces inside the container: see
# examples/deploy/README.md for the exact docker run options.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY . .
# GOTOOLCHAIN=local: never download another toolchain during a build.
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-trimpath
# The build cache is removed in the same step: it would only bloat the
# stage (and every builder that snapshots it).
RUN if [ ! -d vendor ]; then go mod download; fi \
 && export GOCACHE=/tmp/gocache \
 && ldflags="-X github.com/buildgw/buildgw/version.Version=${VERSION} -X github.com/buildgw/buildgw/version.commit=${COMMIT}" \
 && kaniko=$(awk '$1 == "github.com/GoogleContainerTools/kaniko" {print $2}' go.mod) \
 && go build -ldflags="-s -w ${ldflags} -X github.com/GoogleContainerTools/kaniko/pkg/version.version=${kaniko}" \
      -o /out/kaniko-executor ./cmd/kaniko-executor \
 && go build -ldflags="${ldflags}" -o /out/ ./cmd/buildgw ./cmd/buildctl-lite \
 && rm -rf /tmp/gocache

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="buildgw" \
      org.opencontainers.image.description="Build gateway: builds images from CI contexts in rootless sandboxes and pushes them itself" \
      org.opencontainers.image.source="https://github.com/buildgw/buildgw" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
# uidmap gives each sandbox the full subordinate range. Its helpers get
# file capabilities (cap_setuid, cap_setgid) instead of the setuid bit: a
# setuid-root newuidmap needs CAP_SYS_ADMIN in the container to write the
# map of a namespace the buildgw user owns; with file capabilities it acts
# as that user and needs only CAP_SETUID/CAP_SETGID in the bounding set.
# A mirror's base image may already carry the packages; then nothing is
# fetched.
RUN if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' uidmap ca-certificates libcap2-bin 2>/dev/null)" != "ii ii ii " ]; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends uidmap ca-certificates libcap2-bin \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && chmod u-s /usr/bin/newuidmap /usr/bin/newgidmap \
 && setcap cap_setuid=ep /usr/bin/newuidmap \
 && setcap cap_setgid=ep /usr/bin/newgidmap
# The gateway runs as buildgw and its sandboxes as the same user, with a
# full 65536-id subordinate range (a single id cannot unpack a real Debian
# base). State lives in /var/lib/buildgw, mode 0711.
RUN groupadd --gid 10001 buildgw \
 && useradd --uid 10001 --gid buildgw --no-create-home --home-dir /var/lib/buildgw --shell /usr/sbin/nologin buildgw \
 && echo "buildgw:100000:65536" > /etc/subuid \
 && echo "buildgw:100000:65536" > /etc/subgid \
 && install -d -m 0711 -o buildgw -g buildgw /var/lib/buildgw \
 && install -d -m 0755 /etc/buildgw
COPY --from=build /out/buildgw /out/buildctl-lite /out/kaniko-executor /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/buildgw
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/buildgw"]
CMD ["serve", "--config", "/etc/buildgw/buildgw.yaml"]
