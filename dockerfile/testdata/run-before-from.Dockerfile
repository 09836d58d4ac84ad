RUN true
FROM scratch
