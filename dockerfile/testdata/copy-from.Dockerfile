FROM registry.example.com/build:1 AS Build
FROM scratch
COPY --from=build /app /app
COPY --from=0 /etc/passwd /etc/passwd
COPY --from=registry.example.com/tools:2 /bin/tool /bin/tool
RUN --mount=type=bind,from=registry.example.com/certs:3,target=/c true
RUN --mount=type=cache,target=/cache true
