#!/usr/bin/env bash
# Build the enclave image and its EIF, and print the PCRs to pin in the CDK context (waiaas:enclavePcr0 and, for a
# signed image, waiaas:enclavePcr8 with waiaas:enclaveImageSigned=true; docs/deploy.md, sections 3 and 4).
#
# Usage: enclave_app/build_eif.sh <kms-region> <seal-key-arn> [signing-key.pem signing-cert.pem]
#
# - Run from anywhere; the build context is the repository root.
# - Needs docker (with buildx) always, and nitro-cli (aws-nitro-enclaves-cli) for the EIF and the PCRs; without
#   nitro-cli the script stops after the Docker image and says so.
# - With a signing key and certificate, the EIF is signed and PCR8 (hash of the signing certificate) is printed;
#   the seal-key policy pins PCR8 as well as PCR0.
# - SOURCE_DATE_EPOCH defaults to the last commit's time so that two builds of one commit agree.
#
# Lock file: enclave_app/requirements.lock lists linux/amd64 CPython 3.11 wheels with SHA-256 hashes. To update:
#   pip download --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       --python-version 3.11 --implementation cp -d wheels <name==version ...>
#   sha256sum wheels/*.whl   # and cross-check each hash against the one PyPI publishes for that file
set -euo pipefail

if [[ $# -ne 2 && $# -ne 4 ]]; then
    echo "usage: $0 <kms-region> <seal-key-arn> [signing-key.pem signing-cert.pem]" >&2
    exit 2
fi
region=$1
key_arn=$2
root=$(cd "$(dirname "$0")/.." && pwd)
tag=waiaas-enclave:$(git -C "$root" rev-parse --short=12 HEAD)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}

docker buildx build \
    --platform linux/amd64 \
    --file "$root/enclave_app/Dockerfile" \
    --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
    --build-arg "KMS_REGION=$region" \
    --build-arg "KMS_KEY_ID=$key_arn" \
    --output "type=docker,name=$tag,rewrite-timestamp=true" \
    "$root"
echo "docker image: $tag"

if ! command -v nitro-cli >/dev/null 2>&1; then
    echo "nitro-cli not found: EIF not built (install aws-nitro-enclaves-cli on a Nitro-enabled host)." >&2
    exit 0
fi

eif="$root/build/waiaas-enclave.eif"
mkdir -p "$(dirname "$eif")"
args=(build-enclave --docker-uri "$tag" --output-file "$eif")
if [[ $# -eq 4 ]]; then
    args+=(--private-key "$3" --signing-certificate "$4")
fi
# nitro-cli prints JSON: {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": ..., "PCR1": ..., ...}}
nitro-cli "${args[@]}" > "$eif.json"
python3 - "$eif.json" <<'PY'
import json, sys
measurements = json.load(open(sys.argv[1]))["Measurements"]
for name in ("PCR0", "PCR1", "PCR2", "PCR8"):
    if name in measurements:
        print(f"{name}={measurements[name]}")
PY
echo "EIF: $eif (describe again with: nitro-cli describe-eif --eif-path $eif)"
