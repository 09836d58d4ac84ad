# Three stages; building "test" needs "build" but not "docs".
FROM registry.example.com/go:1 AS build
RUN go build ./...

FROM registry.example.com/docs:1 AS docs
RUN make docs

FROM build AS test
COPY --from=docs /out /docs
RUN go test ./...

FROM registry.example.com/runtime:1
COPY --from=build /app /app
