# Build: docker build -t modelguard .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/modelguard ./cmd/modelguard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/modelguard /usr/local/bin/modelguard
USER nonroot
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/modelguard"]
CMD ["serve", "-config", "/etc/modelguard/config.yaml"]
