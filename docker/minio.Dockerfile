# syntax=docker/dockerfile:1
# MinIO built from source at the same pin as scripts/tools.sh (the archive's final commit, which contains
# RELEASE.2025-10-15T17-29-55Z and its security fix); the community edition ships no binaries any more.
#   docker build -f docker/minio.Dockerfile -t ssrl-minio:20260212-7aac2a2 .
# GO_IMAGE / RUNTIME_IMAGE: mirrors of the two bases (air-gapped builds; the real-node tier builds both locally).

ARG GO_IMAGE=golang:1.26.8-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
ENV CGO_ENABLED=0 GOFLAGS= GOBIN=/out
RUN go install -trimpath "github.com/minio/minio@${MINIO_VERSION}" && /out/minio --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="ssrl-minio" \
      org.opencontainers.image.description="MinIO server built from source for the ssrl store" \
      org.opencontainers.image.licenses="AGPL-3.0"
COPY --from=build /out/minio /usr/bin/minio
USER 65532:65532
EXPOSE 9000 9001
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/minio"]
CMD ["server", "/data", "--address", ":9000", "--console-address", ":9001"]
