"""Constants shared by the services and the deployment code (ports, names). No behaviour lives here."""

from __future__ import annotations

ENCLAVE_VSOCK_PORT = 5005
"""Port the enclave app listens on over AF_VSOCK (inside the enclave)."""

KMS_VSOCK_PROXY_PORT = 8000
"""Parent-side vsock-proxy port that forwards to kms.<region>.amazonaws.com:443."""

PROXY_HTTP_PORT = 8080
"""Port the parent proxy's HTTP API listens on."""

ENCLAVE_REQUEST_TIMEOUT_SECONDS = 30.0
"""Time the enclave app takes at most to serve one request (`enclave_app.server`; provisioning may wait on KMS
through the vsock proxy). The parent's time limit for wallet requests is above it (`enclave_app.client`)."""

ENCLAVE_IMAGE_NAME = "waiaas-enclave"
"""Name of the enclave image (Docker tag and EIF file stem)."""
