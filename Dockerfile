# modelguard container image: a static binary (CGO_ENABLED=0) on distroless
# static, running as the image's non-root user (uid 65532), no shell.
#
#   docker build -t modelguard --build-arg VERSION=0.1.0 .
#   docker run -v $PWD/demo:/etc/modelguard:ro -p 9191:9191 -p 9192:9192 modelguard
#
# It serves /etc/modelguard/config.yaml (mount a directory there: "modelguard
# init DIR" writes a starter; relative paths in it resolve there), and
# listens on all interfaces (MODELGUARD_GRPC_ADDRESS, MODELGUARD_ADMIN_ADDRESS
# below override server.grpc_address and server.admin_address). Without a
# mounted configuration it exits with a message saying so.
FROM golang:1.26 AS build
ARG VERSION=0.1.0+docker
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.linkVersion=${VERSION}" -o /out/modelguard ./cmd/modelguard

# Pinned by digest: the gcr.io/distroless/static-debian12:nonroot digest that
# public Dockerfiles cite as current on 2026-08-26. The registry cannot be
# reached from where this file was written, so it was not confirmed there:
# check and update it with "crane digest gcr.io/distroless/static-debian12:nonroot".
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/modelguard /usr/local/bin/modelguard
USER 65532:65532
ENV MODELGUARD_CONFIG=/etc/modelguard/config.yaml \
    MODELGUARD_GRPC_ADDRESS=0.0.0.0:9191 \
    MODELGUARD_ADMIN_ADDRESS=0.0.0.0:9192
EXPOSE 9191 9192
# No shell in the image: the binary itself asks grpc.health.v1 on the port
# of MODELGUARD_GRPC_ADDRESS (exit 0 serving, 1 not).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/modelguard", "health"]
ENTRYPOINT ["/usr/local/bin/modelguard"]
CMD ["serve"]
