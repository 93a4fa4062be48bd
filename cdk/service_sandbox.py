"""The systemd sandbox of the services the hosts run under the proxy's user (the parent proxy and the audit export).

One list, written into both units by the boot script (`cdk.user_data`), and the one the tests run the proxy under
(tests/selfhost/test_proxy_sandbox.py, through the seccomp emulation in tests/support/systemd_sandbox.py: systemd
itself does not run there). What each line takes away, and why the service does not need it:

- no privileges to gain or hold: no capabilities, no setuid programs, no new privileges, no realtime scheduling;
- no writes outside what systemd opens for it (the log file): read-only system, no home directories, a private
  ``/tmp``, files it creates readable by its user only, no System V IPC left behind;
- no kernel knobs: tunables, modules, kernel log, control groups, clock and hostname are out of reach;
- no new namespaces and no mounts of its own, no execution domain changes, no writable and executable memory;
- system calls: the ``@system-service`` set less ``@privileged`` and ``@resources`` (the proxy's own core-file
  limit, `parent_proxy.core_dumps`, is set through ``prlimit64``, which stays), native architecture only;
- socket families: Unix (local), IPv4 and IPv6 (AWS endpoints, the Solana RPC, webhooks), netlink (glibc's
  address lookups ask the kernel which address families the host has), and vsock (the enclave).

``MemoryDenyWriteExecute`` holds because the hosts' proxy reads the chain over RPC: the embedded chain of the
self-host demo (``WAIAAS_CHAIN=litesvm``) compiles programs to machine code and cannot start under it.

Left out on purpose: ``PrivateDevices`` (the enclave is reached over ``AF_VSOCK``; a private ``/dev`` was never
tried on a Nitro parent), ``ProtectProc``/``ProcSubset`` (``/proc`` reads of the libraries underneath, untried),
``PrivateNetwork`` and ``IPAddressDeny`` (it serves and calls out), ``PrivateUsers`` (it runs as its own user).
Each of these can only be tried on a real host; a host whose proxy cannot start fails its readiness check, so a
rollout that breaks it is rolled back (`cdk.user_data`, step 10).
"""

from __future__ import annotations

ADDRESS_FAMILIES = ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_VSOCK")

SANDBOX: tuple[str, ...] = (
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "UMask=0077",
    "RemoveIPC=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "PrivateMounts=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    f"RestrictAddressFamilies={' '.join(ADDRESS_FAMILIES)}",
)
"""The ``[Service]`` lines, in the order the units carry them."""

UNIT_TEXT = "\n".join(SANDBOX)
