"""tenantctl: the command line of tenantgw for platform engineers and developers."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

from kubernetes.config import new_client_from_config

from tenantgw.cli import audit, devgateway, report
from tenantgw.cli.onboard import MANAGED_SETTINGS_PATHS, default_key_file, onboard


def _upstreams(values: list[str]) -> dict[str, str]:
    result = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not url:
            raise SystemExit(f"--upstream {value!r}: expected PROVIDER=URL (or *=URL)")
        result[name] = url
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenantctl", description=__doc__)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="developer loop helpers").add_subparsers(
        dest="what", required=True
    )
    gw = dev.add_parser(
        "gateway", help="run a tenant's gateway locally from its ConfigMap and Secrets"
    )
    gw.add_argument("tenant")
    gw.add_argument("--port", type=int, default=4000)
    gw.add_argument("--workdir", type=Path, default=None, help="default: .dev/gateways/<tenant>")
    gw.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="PROVIDER=URL",
        help="send a provider's calls to URL instead (*=URL for all), e.g. a provider simulator",
    )

    ob = sub.add_parser("onboard", help="print what a developer needs to use Claude Code")
    ob.add_argument("tenant")
    ob.add_argument("--key", required=True)
    ob.add_argument(
        "--format",
        choices=["env", "settings", "managed-settings"],
        default="env",
        help="env: shell exports; settings: ~/.claude/settings.json; managed-settings: the "
        "managed-settings.json an administrator distributes to a fleet (key via apiKeyHelper)",
    )
    ob.add_argument("--url", default=None, help="gateway URL to print instead of status.url")
    ob.add_argument(
        "--ca-file",
        default=None,
        help="env: the CA certificate of an HTTPS gateway on the developer's machine, "
        "exported as NODE_EXTRA_CA_CERTS",
    )
    ob.add_argument(
        "--key-file",
        default=None,
        help="managed-settings: the file the apiKeyHelper reads the key from "
        "(default: $HOME/.config/tenantgw/<tenant>.key)",
    )
    ob.add_argument(
        "--inline-key",
        action="store_true",
        help="managed-settings: put the key itself in the file (ANTHROPIC_AUTH_TOKEN) instead "
        "of an apiKeyHelper",
    )

    audit.add_parser(sub)
    report.add_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "report":
        return report.run(args, lambda: new_client_from_config(config_file=args.kubeconfig))
    if args.command == "audit":
        return audit.run(args, lambda: new_client_from_config(config_file=args.kubeconfig))
    api = new_client_from_config(config_file=args.kubeconfig)
    if args.command == "onboard":
        info = dataclasses.replace(
            onboard(api, args.tenant, args.key, args.url), ca_file=args.ca_file
        )
        hint = info.tls_hint()
        if hint:
            print(hint, file=sys.stderr)
        if args.format == "managed-settings":
            print(
                info.managed_settings_json(
                    args.tenant, key_file=args.key_file, inline_key=args.inline_key
                )
            )
            where = " or ".join(MANAGED_SETTINGS_PATHS.values())
            print(f"# install as {where}", file=sys.stderr)
            if not args.inline_key:
                key_file = args.key_file or default_key_file(args.tenant)
                print(f"# each developer's key goes in {key_file} (mode 0600)", file=sys.stderr)
        else:
            print(info.shell() if args.format == "env" else info.settings_json())
        return 0

    workdir = args.workdir or Path(".dev/gateways") / args.tenant
    spec = devgateway.build_spec(
        api,
        args.tenant,
        workdir=workdir.resolve(),
        port=args.port,
        upstreams=_upstreams(args.upstream),
    )
    print(
        f"gateway of {args.tenant} on http://127.0.0.1:{args.port} (files in {spec.workdir})",
        file=sys.stderr,
    )
    proc = devgateway.run(spec)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
