#!/usr/bin/env bash
# `make ansible-test`: the playbook applied for real, over SSH, to a Debian 12 target booted with systemd-nspawn in
# its own network namespace (tests/ansible/target.sh), never to this machine. In order:
#   lint (production profile, offline) -> two signed bundles (the previous release and this one, throwaway keys)
#   -> a from-scratch install of the previous release, verified -> the upgrade to this one, verified
#   -> a second run that changes nothing, verified -> reboot, verified -> a third run that changes nothing
#   -> a tampered bundle refused, the appliance untouched -> a rollback to the previous release, verified.
# Timings go to reports/ansible-test.md. The target is torn down whatever happens.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export TARGET_WORK=${TARGET_WORK:-$ROOT/build/ansible-test}
TARGET=$ROOT/tests/ansible/target.sh
ANSIBLE_BIN=$ROOT/.venv-ansible/bin
PYTHON=$ROOT/.venv/bin/python
REPORT=$ROOT/reports/ansible-test.md
VERSION=$("$PYTHON" -c 'import aftercall; print(aftercall.__version__)')
PREVIOUS=${VERSION}rc1  # an older release by PEP 440: 0.1.0rc1 < 0.1.0
TARGET_IP=${TARGET_IP:-10.231.0.2}
export TARGET_IP TARGET_SSH_KEY=$TARGET_WORK/ssh/id_ed25519 TARGET_SSH_PUBKEY=$TARGET_WORK/ssh/id_ed25519.pub
export PATH=$ANSIBLE_BIN:$PATH ANSIBLE_CONFIG=$ROOT/ansible/ansible.cfg ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
TIMINGS=()

step() { printf '\n=== %s\n' "$*"; STEP_START=$SECONDS; }
took() { TIMINGS+=("| $1 | $((SECONDS - STEP_START)) s |"); }
fail() { echo "ansible-test: FAILED: $*" >&2; exit 1; }

# On a failure the services' journal is kept ($TARGET_WORK/journal.log); ANSIBLE_TEST_KEEP=1 leaves the target up
# to look into (`tests/ansible/target.sh ssh ...`, then `tests/ansible/target.sh stop`).
teardown() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    "$TARGET" ssh sudo journalctl --no-pager --lines 400 --unit 'aftercall-*' --unit '*-container.service' \
      > "$TARGET_WORK/journal.log" 2>&1 || true
    tail -n 60 "$TARGET_WORK/journal.log" >&2 || true
    echo "ansible-test: failed (exit $status); the services' journal: $TARGET_WORK/journal.log," \
      "the target's console: $TARGET_WORK/nspawn.log" >&2
    [ "${ANSIBLE_TEST_KEEP:-0}" = 1 ] && return
  fi
  "$TARGET" stop || true
}
trap teardown EXIT

# ansible-playbook against the target; the output is kept for changed_count.
playbook() {
  local bundle=$1; shift
  (cd "$ROOT/ansible" && ansible-playbook -i "$TARGET_WORK/inventory.yml" \
    -e "@$ROOT/tests/ansible/ci-vars.yml" -e "@$TARGET_WORK/ci-paths.yml" \
    -e "aftercall_bundle_path=$bundle" "$@") 2>&1 | tee "$TARGET_WORK/last-run.log"
  return "${PIPESTATUS[0]}"
}
changed_count() { sed -n 's/^appliance1 *:.* changed=\([0-9]*\).*/\1/p' "$TARGET_WORK/last-run.log"; }
install() { playbook "$1" site.yml || fail "site.yml with $(basename "$1")"; }
verify() { playbook "$TARGET_WORK/dist/aftercall-bundle-$1.tar" verify.yml -e "aftercall_verify_version=$1" \
  || fail "verify.yml, expecting $1"; }
unchanged_run() {
  install "$1"
  [ "$(changed_count)" = 0 ] || fail "the run changed $(changed_count) thing(s); it must change none"
}

mkdir -p "$TARGET_WORK" "$ROOT/reports"
step "ansible-lint, production profile, with no network"
if [ "$(id -u)" = 0 ]; then (cd "$ROOT/ansible" && unshare -n -- ansible-lint --profile production)
else (cd "$ROOT/ansible" && ansible-lint --offline --profile production); fi
took "ansible-lint"

step "the target's host packages and root filesystem"
"$TARGET" host-deps
rm -rf "$TARGET_WORK/ssh" && mkdir -p "$TARGET_WORK/ssh"
ssh-keygen -q -t ed25519 -N '' -C aftercall-ci -f "$TARGET_SSH_KEY"
"$TARGET" rootfs "$TARGET_WORK/rootfs"
took "target root filesystem (Debian 12, mmdebstrap; cached when unchanged)"

step "two signed bundles, $PREVIOUS and $VERSION, with throwaway keys"
rm -rf "$TARGET_WORK/keys" "$TARGET_WORK/dist"
"$ROOT/.venv/bin/aftercall" bundle keygen --out "$TARGET_WORK/keys"
for version in "$PREVIOUS" "$VERSION"; do
  "$PYTHON" "$ROOT/scripts/make_bundle.py" --version "$version" --out "$TARGET_WORK/dist" \
    --signing-key "$TARGET_WORK/keys/bundle-signing.key"
done
"$PYTHON" "$ROOT/tests/ansible/standin_image.py" "$TARGET_WORK/standin.tar" >/dev/null
cat > "$TARGET_WORK/ci-paths.yml" <<EOF
aftercall_bundle_public_key: $TARGET_WORK/keys/bundle-signing.pub
ci_standin_archive: $TARGET_WORK/standin.tar
ci_standin_sha256: $(sha256sum "$TARGET_WORK/standin.tar" | cut -d' ' -f1)
EOF
cat > "$TARGET_WORK/inventory.yml" <<EOF
all:
  children:
    appliances:
      hosts:
        appliance1:
          ansible_host: $TARGET_IP
          ansible_user: deploy
          ansible_ssh_private_key_file: $TARGET_SSH_KEY
          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
EOF
took "two bundles and the stand-in image"

step "boot the target"
"$TARGET" start "$TARGET_WORK/rootfs"
took "boot to SSH"

step "from scratch: install $PREVIOUS"
install "$TARGET_WORK/dist/aftercall-bundle-$PREVIOUS.tar"
took "from-scratch install ($PREVIOUS)"
verify "$PREVIOUS"

step "upgrade to $VERSION"
install "$TARGET_WORK/dist/aftercall-bundle-$VERSION.tar"
took "upgrade to $VERSION"
verify "$VERSION"

step "second run: nothing to change"
unchanged_run "$TARGET_WORK/dist/aftercall-bundle-$VERSION.tar"
took "second run (changed=0)"
verify "$VERSION"

step "reboot"
"$TARGET" reboot
took "reboot to SSH"
verify "$VERSION"
step "third run after the reboot: nothing to change"
unchanged_run "$TARGET_WORK/dist/aftercall-bundle-$VERSION.tar"
took "third run (changed=0)"

step "a tampered bundle is refused"
"$PYTHON" - "$TARGET_WORK/dist/aftercall-bundle-$VERSION.tar" "$TARGET_WORK/tampered.tar" <<'EOF'
import shutil, sys, tarfile
source, tampered = sys.argv[1:]
shutil.copyfile(source, tampered)
with tarfile.open(tampered) as tar:  # one byte of the aftercall wheel, in place: the same names and sizes
    member = next(m for m in tar.getmembers() if m.name.startswith("wheels/aftercall-"))
with open(tampered, "r+b") as handle:
    handle.seek(member.offset_data + member.size // 2)
    byte = handle.read(1)
    handle.seek(-1, 1)
    handle.write(bytes([byte[0] ^ 0xFF]))
EOF
if playbook "$TARGET_WORK/tampered.tar" site.yml; then fail "site.yml accepted a tampered bundle"; fi
grep -q "refusing the bundle: .*does not match its sha256" "$TARGET_WORK/last-run.log" \
  || fail "site.yml failed, but not by refusing the tampered bundle"
verify "$VERSION"
took "tampered bundle refused, appliance untouched"

step "rollback to $PREVIOUS"
install "$TARGET_WORK/dist/aftercall-bundle-$PREVIOUS.tar"
took "rollback to $PREVIOUS"
verify "$PREVIOUS"

{
  echo "# make ansible-test ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Debian 12 target under systemd-nspawn, $(nproc) cores; bundle $VERSION: $(du -m "$TARGET_WORK/dist/aftercall-bundle-$VERSION.tar" | cut -f1) MiB."
  echo
  echo "| step | time |"
  echo "|---|---|"
  printf '%s\n' "${TIMINGS[@]}"
} > "$REPORT"
cat "$REPORT"
echo "ansible-test: passed"
