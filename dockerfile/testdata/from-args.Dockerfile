FROM registry.example.com/base:1
FROM registry.example.com/base:1 a b
