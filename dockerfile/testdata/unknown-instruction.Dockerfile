FROM registry.example.com/base:1
RUN true
BOGUS x
