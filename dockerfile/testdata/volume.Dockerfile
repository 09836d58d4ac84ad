FROM registry.example.com/base:1 AS one
RUN mkdir /foo
VOLUME /foo/bar
FROM registry.example.com/base:1 AS two
RUN true
FROM one
volume ["/x"]
