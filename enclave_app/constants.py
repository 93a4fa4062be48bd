"""Constants shared by the services and the deployment code (ports, names). No behaviour lives here."""

from __future__ import annotations

ENCLAVE_VSOCK_PORT = 5005
"""Port the enclave app listens on over AF_VSOCK (inside the enclave)."""

KMS_VSOCK_PROXY_PORT = 8000
"""Parent-side vsock-proxy port that forwards to kms.<region>.amazonaws.com:443."""

PROXY_HTTP_PORT = 8080
"""Port the parent proxy's HTTP API listens on."""

ENCLAVE_IMAGE_NAME = "waiaas-enclave"
"""Name of the enclave image (Docker tag and EIF file stem)."""
