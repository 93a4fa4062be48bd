"""Boot script of an enclave host, rendered from the config (a plain string: no CloudFormation tokens).

What it does, in order:

1. installs nitro-cli, the AWS CLI, the CloudWatch agent and logrotate from the Amazon Linux repositories (reached
   through the S3 endpoint);
2. prepares the services' log files and their rotation, and starts the CloudWatch agent on them (`cdk.host_logs`);
3. writes the enclave allocator configuration (memory and CPUs from context) and starts the allocator;
4. replaces the stock vsock-proxy service with one whose allowlist holds this region's KMS endpoint only;
5. fetches the release (enclave image and parent-proxy wheelhouse) from the data bucket;
6. installs a systemd unit that, before every start, checks the image's PCR0 (SHA-384 of the image) and, for a
   signed image, PCR8 against the pinned values, and only then runs `nitro-cli run-enclave` (never in debug mode);
7. installs the parent proxy and runs it as a systemd service under its own user, in no group: it reaches the
   enclave over vsock, and only root may use /dev/nitro_enclaves (the `ne` group could stop the enclave or start
   another image without the check of step 6), inside the sandbox of `cdk.service_sandbox` (as step 9's export);
8. publishes an enclave heartbeat metric every minute;
9. exports the audit log to the data bucket every 15 minutes (``waiaas audit export``: the records appended since
   the last export, as write-once objects of at most ``MAX_RECORDS_PER_EXPORT`` records each,
   `parent_proxy.audit_exports`; its output goes to the proxy's log file);
10. waits until the proxy's ``/readyz`` answers 200, at most until `READY_DEADLINE_MINUTES` after the script
    started, and signals SUCCESS to the Auto Scaling group in the hosts stack (`SignalTarget`).

``/readyz``, not ``/healthz``: the latter says only that the proxy process runs, the former that the enclave
answers (so the image passed check-eif.sh and booted), the state table answers, and the enclave opens a stored
wallet when there is one (so the seal key admits this image). CloudFormation waits for these signals when it creates
the group and for each host a rollout launches (`cdk.hosts_stack`).

A failed step stops the script (`set -euo pipefail`), and its exit trap signals FAILURE, as does a proxy not ready
by the deadline: CloudFormation then fails the creation or rolls the rollout back. A host that cannot signal at all
(no AWS CLI, no way to the CloudFormation endpoint) leaves CloudFormation to its own timeout, which fails it too.
Outside a creation or a rollout (the group replacing a host) nothing waits for the signal: a refused SUCCESS is
reported in the boot log and changes nothing. A host whose enclave does not start reports no heartbeat and fails
its load-balancer health check, so monitoring raises the alarm and the group replaces it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cdk import host_logs, naming, service_sandbox
from cdk.config import DeploymentConfig
from enclave_app.constants import ENCLAVE_IMAGE_NAME, ENCLAVE_VSOCK_PORT, KMS_VSOCK_PROXY_PORT, PROXY_HTTP_PORT

ENCLAVE_CID = 16
"""Context id given to the enclave at launch; the parent proxy connects to (ENCLAVE_CID, ENCLAVE_VSOCK_PORT)."""

INSTALL_DIR = "/opt/waiaas"
EIF_PATH = f"{INSTALL_DIR}/{ENCLAVE_IMAGE_NAME}.eif"
WHEELHOUSE_NAME = "parent-proxy-wheelhouse.tar.gz"
PROXY_USER = "waiaas"
AUDIT_EXPORT_MINUTES = 15
"""How often each host exports the audit log: the records a rewrite of the log could still go unseen in (docs/deploy.md,
Audit exports)."""
READY_PATH = "/readyz"
"""The proxy's readiness endpoint: enclave answering, state table answering, a stored wallet opened (if any)."""
READY_DEADLINE_MINUTES = 10
"""From the start of the boot script to a ready proxy; past it the host signals FAILURE."""
IMDS = "http://169.254.169.254/latest"


@dataclass(frozen=True)
class SignalTarget:
    """The resource a host signals its boot to: the Auto Scaling group (logical id) in the hosts stack (name)."""

    stack: str
    resource: str


def release_key(config: DeploymentConfig, file_name: str) -> str:
    return f"{naming.RELEASES_PREFIX}{config.release}/{file_name}"


def proxy_environment(config: DeploymentConfig) -> dict[str, str]:
    """The parent proxy's settings on a host (the variables `parent_proxy.settings` reads; a test parses the
    rendered file with it). Every value is validated context or a constant: nothing needs shell quoting, and the
    file holds no secret (user data is readable by whoever may describe the instance)."""
    return {
        "WAIAAS_STATE": f"dynamodb:{naming.STATE_TABLE}@{config.region}",
        "WAIAAS_ENCLAVE": f"vsock:{ENCLAVE_CID}:{ENCLAVE_VSOCK_PORT}",
        "WAIAAS_OWNER_KEYS": ",".join(config.owner_public_keys),
        # The origins owners reach the load balancer at: owner requests signed for any other are refused.
        "WAIAAS_PUBLIC_ORIGINS": ",".join(config.public_origins),
        "WAIAAS_CHAIN": f"rpc:{config.solana_rpc_url}",
        # All interfaces of the host: the load balancer's health checks and traffic arrive on its private address;
        # the security group admits the proxy port from the load balancer only.
        "WAIAAS_HOST": "0.0.0.0",  # noqa: S104 - see the comment above
        "WAIAAS_PORT": str(PROXY_HTTP_PORT),
        # The enclave's KMS sealer has no credentials of its own: the proxy lends it the host role's (instance
        # metadata, IMDSv2 with hop limit 1 reaches the proxy on the host), which the seal key's policy names.
        "WAIAAS_ENCLAVE_KMS_CREDENTIALS": "host",
        # Every policy declares the wallet's Squads multisig, checked on chain at install (DESIGN.md section 10).
        # The proxy's default, written out so that the deployed setting does not hang on a default.
        "WAIAAS_REQUIRE_MULTISIG": "true",
        # A copy of each new sealed agent key goes to the data bucket's sealed/ prefix before the store keeps it.
        "WAIAAS_DATA_BUCKET": data_bucket(config),
        # GET /metrics tells every wallet's decisions and approvals as they happen: served on the host only (a
        # scraper there, or `curl` over Session Manager), 404 to what comes through the load balancer, which also
        # answers 404 for the path itself (`cdk.hosts_stack.METRICS_PATH_PATTERNS`).
        "WAIAAS_METRICS": "loopback",
    }


def data_bucket(config: DeploymentConfig) -> str:
    """The data bucket as the proxy and ``waiaas audit export`` name it: ``<bucket>@<region>``."""
    return f"{naming.data_bucket_name(config)}@{config.region}"


def audit_export_command(config: DeploymentConfig) -> str:
    """What ``waiaas-audit-export.service`` runs: the proxy's table (read by ``Query``) into the data bucket."""
    state = proxy_environment(config)["WAIAAS_STATE"]
    return (
        f"{INSTALL_DIR}/venv/bin/waiaas audit export --state {state} --bucket {data_bucket(config)} "
        f"--prefix {naming.AUDIT_PREFIX}"
    )


def _logs_step() -> str:
    """Step 2: the services' log files (created before any unit opens them), their rotation, and the CloudWatch
    agent started on its configuration (`cdk.host_logs`)."""
    group = host_logs.AGENT_USER
    files = "\n".join(
        f"install -m 0640 -o root -g {group} /dev/null {host_logs.LOG_FILES[s]}" for s in host_logs.SERVICE_LOGS
    )
    return f"""# 2. Logs: the services write to files in {host_logs.LOG_DIR} (root-owned, readable by the agent only);
# logrotate bounds them; the CloudWatch agent ships exactly those files to their log groups.
install -d -m 0750 -o root -g {group} {host_logs.LOG_DIR}
{files}
cat > {host_logs.LOGROTATE_CONFIG_PATH} <<'EOF_LOGROTATE'
{host_logs.logrotate_config()}
EOF_LOGROTATE
cat > /etc/systemd/system/waiaas-logrotate.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS log rotation (size-bounded)
[Service]
Type=oneshot
ExecStart=/usr/sbin/logrotate --state /var/lib/logrotate/waiaas.status {host_logs.LOGROTATE_CONFIG_PATH}
EOF_UNIT
cat > /etc/systemd/system/waiaas-logrotate.timer <<'EOF_UNIT'
[Unit]
Description=WAIaaS log rotation every hour
[Timer]
OnBootSec=10min
OnUnitActiveSec=60min
[Install]
WantedBy=timers.target
EOF_UNIT
cat > {host_logs.AGENT_CONFIG_PATH} <<'EOF_AGENT'
{host_logs.agent_config()}
EOF_AGENT
{host_logs.AGENT_CTL} -a fetch-config -m ec2 -s -c file:{host_logs.AGENT_CONFIG_PATH}"""


def _signal_step(signal: SignalTarget) -> str:
    """Step 0: how the boot ends reaches CloudFormation. SUCCESS is sent by step 10 only; any earlier exit that is not
    0 (a failed step under `set -e`, the readiness deadline) sends FAILURE from the exit trap. The instance id (the
    signal's unique id, which CloudFormation counts per host) comes from the instance metadata, IMDSv2."""
    q = shlex.quote
    return f"""# 0. The boot's outcome goes to CloudFormation, which waits for it when it creates the group or
#    rolls out a new launch template: SUCCESS from step 10 only (the proxy ready), FAILURE from the exit
#    trap on any failed step.
signal_boot() {{
  local token instance
  token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' {IMDS}/api/token)" || return 1
  instance="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" {IMDS}/meta-data/instance-id)" || return 1
  aws cloudformation signal-resource --stack-name {q(signal.stack)} --logical-resource-id {q(signal.resource)} \\
    --unique-id "$instance" --status "$1"
}}
trap 'status=$?; if [ "$status" -ne 0 ]; then signal_boot FAILURE || true; fi' EXIT"""


def _ready_step() -> str:
    """Step 10: wait for ``/readyz`` (curl -f: any answer but 2xx, or none, is not ready), then SUCCESS."""
    deadline = READY_DEADLINE_MINUTES * 60
    return f"""# 10. Ready: the proxy's {READY_PATH} answers 200 (the enclave answers, the state table answers, a
#     stored wallet opens) within {READY_DEADLINE_MINUTES} minutes of the start of this script; then SUCCESS.
#     Past that, exit 1 (FAILURE).
until curl -fs -o /dev/null --max-time 5 http://127.0.0.1:{PROXY_HTTP_PORT}{READY_PATH}; do
  if [ "$SECONDS" -ge {deadline} ]; then
    echo "waiaas: the proxy was not ready within {READY_DEADLINE_MINUTES} minutes of boot; signalling FAILURE" >&2
    exit 1
  fi
  sleep 5
done
signal_boot SUCCESS || echo "waiaas: CloudFormation took no SUCCESS signal (nothing waits for this host)" >&2"""


def render(config: DeploymentConfig, *, signal: SignalTarget) -> str:
    """The boot script; ``signal`` names the resource CloudFormation waits on for this host's boot."""
    q = shlex.quote
    proxy_env = "\n".join(f"{name}={value}" for name, value in proxy_environment(config).items())
    bucket = naming.data_bucket_name(config)
    kms_host = f"kms.{config.region}.amazonaws.com"
    eif_uri = f"s3://{bucket}/{release_key(config, ENCLAVE_IMAGE_NAME + '.eif')}"
    wheels_uri = f"s3://{bucket}/{release_key(config, WHEELHOUSE_NAME)}"
    pcr8_check = ""
    if config.enclave.pcr8 is not None:
        pcr8_check = f"""
measured_pcr8="$(jq -r '.Measurements.PCR8 // empty' <<<"$measurements")"
if [ "${{measured_pcr8,,}}" != {q(config.enclave.pcr8)} ]; then
  echo "waiaas: enclave image PCR8 does not match the pinned signing certificate; refusing to run" >&2
  exit 1
fi"""
    return f"""#!/bin/bash
# WAIaaS enclave host bootstrap (generated by cdk/user_data.py; edit that file, not the launch template).
set -euo pipefail
export AWS_DEFAULT_REGION={q(config.region)}

{_signal_step(signal)}

# 1. Packages.
dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel awscli-2 jq python3.11 \\
  amazon-cloudwatch-agent logrotate
install -d -m 0755 {INSTALL_DIR} /etc/waiaas
id -u {PROXY_USER} >/dev/null 2>&1 || useradd --system --home-dir {INSTALL_DIR} --shell /sbin/nologin {PROXY_USER}

{_logs_step()}

# 3. Enclave allocator: memory and CPUs reserved for the enclave (from cdk.json context).
cat > /etc/nitro_enclaves/allocator.yaml <<'EOF_ALLOCATOR'
---
memory_mib: {config.enclave_memory_mib}
cpu_count: {config.enclave_cpu_count}
EOF_ALLOCATOR
systemctl enable --now nitro-enclaves-allocator.service

# 4. vsock-proxy: this region's KMS endpoint and nothing else.
systemctl disable --now nitro-enclaves-vsock-proxy.service || true
cat > /etc/nitro_enclaves/waiaas-vsock-proxy.yaml <<'EOF_ALLOWLIST'
allowlist:
- {{address: {kms_host}, port: 443}}
EOF_ALLOWLIST
cat > /etc/systemd/system/waiaas-vsock-proxy.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS vsock-proxy to KMS (allowlist: KMS only)
Wants=network-online.target
After=network-online.target
[Service]
ExecStart=/usr/bin/vsock-proxy {KMS_VSOCK_PROXY_PORT} {kms_host} 443 \\
  --config /etc/nitro_enclaves/waiaas-vsock-proxy.yaml
Restart=always
DynamicUser=yes
[Install]
WantedBy=multi-user.target
EOF_UNIT

# 5. Release artifacts.
aws s3 cp {q(eif_uri)} {EIF_PATH}
aws s3 cp {q(wheels_uri)} {INSTALL_DIR}/{WHEELHOUSE_NAME}
chmod 0444 {EIF_PATH}

# 6. The enclave: measurements checked against the pinned values before every start.
cat > {INSTALL_DIR}/check-eif.sh <<'EOF_CHECK'
#!/bin/bash
set -euo pipefail
measurements="$(nitro-cli describe-eif --eif-path {EIF_PATH})"
measured_pcr0="$(jq -r '.Measurements.PCR0 // empty' <<<"$measurements")"
if [ "${{measured_pcr0,,}}" != {q(config.enclave.pcr0)} ]; then
  echo "waiaas: enclave image PCR0 (SHA-384) does not match the pinned value; refusing to run" >&2
  exit 1
fi{pcr8_check}
EOF_CHECK
chmod 0555 {INSTALL_DIR}/check-eif.sh
cat > /etc/systemd/system/waiaas-enclave.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS enclave (pinned image, production mode)
Requires=nitro-enclaves-allocator.service waiaas-vsock-proxy.service
After=nitro-enclaves-allocator.service waiaas-vsock-proxy.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre={INSTALL_DIR}/check-eif.sh
ExecStart=/usr/bin/nitro-cli run-enclave --eif-path {EIF_PATH} --memory {config.enclave_memory_mib} \\
  --cpu-count {config.enclave_cpu_count} --enclave-cid {ENCLAVE_CID}
ExecStop=/usr/bin/nitro-cli terminate-enclave --all
StandardOutput=append:{host_logs.LOG_FILES["enclave"]}
StandardError=append:{host_logs.LOG_FILES["enclave"]}
[Install]
WantedBy=multi-user.target
EOF_UNIT

# 7. The parent proxy.
install -d -m 0755 {INSTALL_DIR}/wheelhouse
tar -xzf {INSTALL_DIR}/{WHEELHOUSE_NAME} -C {INSTALL_DIR}/wheelhouse
python3.11 -m venv {INSTALL_DIR}/venv
{INSTALL_DIR}/venv/bin/pip install --no-index --find-links {INSTALL_DIR}/wheelhouse waiaas
cat > /etc/waiaas/proxy.env <<'EOF_ENV'
{proxy_env}
EOF_ENV
cat > /etc/systemd/system/waiaas-proxy.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS parent proxy
Requires=waiaas-enclave.service
After=waiaas-enclave.service
[Service]
User={PROXY_USER}
EnvironmentFile=/etc/waiaas/proxy.env
ExecStart={INSTALL_DIR}/venv/bin/python -m parent_proxy
Restart=on-failure
{service_sandbox.UNIT_TEXT}
StandardOutput=append:{host_logs.LOG_FILES["proxy"]}
StandardError=append:{host_logs.LOG_FILES["proxy"]}
[Install]
WantedBy=multi-user.target
EOF_UNIT

# 8. Enclave heartbeat: 1 while an enclave is running, 0 otherwise.
cat > {INSTALL_DIR}/heartbeat.sh <<'EOF_HEARTBEAT'
#!/bin/bash
set -euo pipefail
running="$(nitro-cli describe-enclaves | jq '[.[] | select(.State == "RUNNING")] | length')"
value=0
if [ "$running" -ge 1 ]; then value=1; fi
aws cloudwatch put-metric-data --namespace {naming.METRIC_NAMESPACE} \\
  --metric-name {naming.ENCLAVE_HEALTH_METRIC} --value "$value"
EOF_HEARTBEAT
chmod 0555 {INSTALL_DIR}/heartbeat.sh
cat > /etc/systemd/system/waiaas-heartbeat.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS enclave heartbeat metric
[Service]
Type=oneshot
ExecStart={INSTALL_DIR}/heartbeat.sh
EOF_UNIT
cat > /etc/systemd/system/waiaas-heartbeat.timer <<'EOF_UNIT'
[Unit]
Description=WAIaaS enclave heartbeat every minute
[Timer]
OnBootSec=60
OnUnitActiveSec=60
[Install]
WantedBy=timers.target
EOF_UNIT

# 9. Audit export: the records appended since the last export, as write-once objects under audit/ (each host;
#    two hosts exporting the same records write the same objects). Its output goes to the proxy's log file.
cat > /etc/systemd/system/waiaas-audit-export.service <<'EOF_UNIT'
[Unit]
Description=WAIaaS audit log export to the data bucket
[Service]
Type=oneshot
User={PROXY_USER}
ExecStart={audit_export_command(config)}
{service_sandbox.UNIT_TEXT}
StandardOutput=append:{host_logs.LOG_FILES["proxy"]}
StandardError=append:{host_logs.LOG_FILES["proxy"]}
EOF_UNIT
cat > /etc/systemd/system/waiaas-audit-export.timer <<'EOF_UNIT'
[Unit]
Description=WAIaaS audit log export every {AUDIT_EXPORT_MINUTES} minutes
[Timer]
OnBootSec=5min
OnUnitActiveSec={AUDIT_EXPORT_MINUTES}min
RandomizedDelaySec=60
[Install]
WantedBy=timers.target
EOF_UNIT

systemctl daemon-reload
systemctl enable --now waiaas-vsock-proxy.service waiaas-enclave.service waiaas-proxy.service waiaas-heartbeat.timer \\
  waiaas-logrotate.timer waiaas-audit-export.timer

{_ready_step()}
"""
