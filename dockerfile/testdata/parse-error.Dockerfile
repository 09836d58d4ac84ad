FROM registry.example.com/base:1
RUN true
COPY only-one-argument
