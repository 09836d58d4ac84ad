# syntax=registry.example.com/frontend:1
FROM scratch
