# The gateway's own image. The gateway needs user namespaces for its
# rootless sandboxes: see examples/deploy for the runtime options.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -o /out/ ./cmd/buildgw ./cmd/buildctl-lite \
 && go build -trimpath -ldflags='-s -w' -o /out/kaniko-executor ./cmd/kaniko-executor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends uidmap ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin buildgw-sandbox \
 && echo "buildgw-sandbox:100000:65536" > /etc/subuid \
 && echo "buildgw-sandbox:100000:65536" > /etc/subgid \
 && install -d -m 0711 /var/lib/buildgw
COPY --from=build /out/buildgw /out/buildctl-lite /out/kaniko-executor /usr/local/bin/
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/buildgw"]
CMD ["serve", "--config", "/etc/buildgw/buildgw.yaml"]
