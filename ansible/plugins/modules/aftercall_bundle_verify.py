#!/usr/bin/python
"""Ansible module: refuse an aftercall bundle that is unsigned, altered, or signed by another key."""

from __future__ import annotations

DOCUMENTATION = r"""
module: aftercall_bundle_verify
short_description: Check an aftercall offline bundle against the site's public key
description:
  - Checks the Ed25519 signature of the bundle's manifest and every file's sha256 and size; fails naming the first
    file that is changed, added, missing or placed outside the bundle.
  - "Runs the same code as C(aftercall bundle verify). Needs the C(cryptography) library, which ansible-core needs
    too, so run it on the control node (C(delegate_to: localhost))."
options:
  bundle:
    description: Path of C(aftercall-bundle-VERSION.tar).
    type: path
    required: true
  public_key:
    description: The site's copy of C(bundle-signing.pub) (PEM); never the one inside the bundle.
    type: path
    required: true
"""

RETURN = r"""
version:
  description: The release the bundle holds.
  type: str
  returned: success
files:
  description: How many files the manifest lists.
  type: int
  returned: success
"""

from pathlib import Path

from ansible.module_utils.aftercall_bundle import BundleError, verify_bundle
from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={"bundle": {"type": "path", "required": True},
                                          "public_key": {"type": "path", "required": True}},
                           supports_check_mode=True)
    try:
        manifest = verify_bundle(Path(module.params["bundle"]), Path(module.params["public_key"]))
    except (BundleError, ValueError, OSError) as exc:
        module.fail_json(msg=f"refusing the bundle: {exc}")
    module.exit_json(changed=False, version=manifest["version"], files=len(manifest["files"]))


if __name__ == "__main__":
    main()
