ARG REGISTRY=registry.example.com
ARG IMAGE=${REGISTRY}/base
ARG VARIANT=""
ARG TAG=1
FROM ${IMAGE}${VARIANT}:${TAG} AS base
# An ARG inside a stage does not count for a later FROM.
ARG TAG=2
FROM $IMAGE:$TAG
