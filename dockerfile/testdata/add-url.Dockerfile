FROM registry.example.com/base:1
ADD local.tgz /local/
ADD \
    https://example.com/a.tgz /a/
add  --chmod=644 git://example.com/r.git /r
ADD git@example.com:org/repo.git /repo
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 http://example.com/b /b
ARG SRC=https://example.com/c
ADD $SRC /c
ADD <<EOT /heredoc
ADD https://not-an-instruction.example.com/ /x
EOT
RUN <<EOT
echo ADD https://example.com/in-a-heredoc
EOT
COPY https-not-a-url /x
