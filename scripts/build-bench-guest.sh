#!/usr/bin/env bash
# Build the guest of the data-plane benchmark: the test guest of scripts/build-guest.sh with
# iperf3 added.
#   .cache/bench-guest/initramfs.cpio.gz  the test guest's initramfs plus /usr/bin/iperf3, the
#                                         shared libraries it links, and a hook that /init
#                                         runs before its final "done" report
# The kernel is the test guest's own, .cache/guest/vmlinuz.
#
# Kernel parameters the hook reads, besides those of scripts/build-guest.sh:
#   tg.iperf=SERVER    run `iperf3 -c SERVER -t N -J` once the network is configured
#   tg.iperftime=N     test length in seconds (default 10)
# Lines the hook writes to ttyS0:
#   TAPGATE-GUEST iperf=ok|fail
#   TAPGATE-IPERF LINE    one for each line of iperf3's JSON report
#
# iperf3 and libiperf.so.0 are taken from the installed Debian packages iperf3 and libiperf0;
# the other libraries iperf3 links (libc, libcrypto, libsctp, libm, the loader) are copied
# from the host as ldd resolves them. Run as root. The build is skipped when
# .cache/bench-guest/build.stamp matches this script, the test guest's initramfs and the
# iperf3 version.
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "$script_path")/.." && pwd)"
base_dir="$repo_root/.cache/guest"
out_dir="$repo_root/.cache/bench-guest"
stamp_file="$out_dir/build.stamp"

log() { printf 'build-bench-guest: %s\n' "$*"; }
die() { printf 'build-bench-guest: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it builds the test guest and unpacks device nodes); run: sudo $script_path"
for tool in cpio gzip sha256sum flock ldd chroot dpkg-query; do
  command -v "$tool" >/dev/null || die "required tool '$tool' is missing; install the package that provides it"
done
for package in iperf3 libiperf0; do
  [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)" == "install ok installed" ]] ||
    die "package '$package' is not installed; install it with 'apt-get install iperf3' or run scripts/install-deps.sh"
done

bash "$repo_root/scripts/build-guest.sh"
[[ -f "$base_dir/initramfs.cpio.gz" && -f "$base_dir/vmlinuz" ]] || die "scripts/build-guest.sh left no guest in $base_dir"

iperf_version="$(dpkg-query -W -f='${Version}' iperf3)"
expected_stamp="script-sha256 $(sha256sum "$script_path" | cut -d' ' -f1)
base-initramfs-sha256 $(sha256sum "$base_dir/initramfs.cpio.gz" | cut -d' ' -f1)
iperf3 $iperf_version"

cache_is_current() {
  [[ -f "$out_dir/initramfs.cpio.gz" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$expected_stamp" ]]
}

if cache_is_current; then
  log "using cached benchmark guest in $out_dir"
  exit 0
fi

mkdir -p "$out_dir"
chmod 0755 "$repo_root/.cache" "$out_dir"
# Serialize concurrent builds, and check the cache again once the lock is held.
exec 9>"$out_dir/.lock"
flock 9
if cache_is_current; then
  log "using cached benchmark guest in $out_dir"
  exit 0
fi

work_dir="$(mktemp -d /tmp/tapgate-bench-guest.XXXXXX)"
trap 'rm -rf "$work_dir"' EXIT
root_dir="$work_dir/initramfs"
mkdir -p "$root_dir"
(cd "$root_dir" && gzip -dc "$base_dir/initramfs.cpio.gz" | cpio --extract --make-directories --preserve-modification-time --no-absolute-filenames --quiet)
[[ -f "$root_dir/init" ]] || die "the test guest's initramfs has no /init"

# The hook runs where the test guest's /init writes its last report, after the network is set
# up. Editing a copy keeps scripts/build-guest.sh the only owner of the test guest.
hook_anchor='report "done"'
anchors="$(grep -cx "$hook_anchor" "$root_dir/init" || true)"
[[ "$anchors" == 1 ]] ||
  die "expected exactly one line '$hook_anchor' in the test guest's /init to run the iperf3 hook before, found $anchors; update this script to match scripts/build-guest.sh"
sed -i "s|^$hook_anchor\$|[ -f /etc/bench-hook.sh ] \\&\\& . /etc/bench-hook.sh\\n$hook_anchor|" "$root_dir/init"

cat >"$root_dir/etc/bench-hook.sh" <<'EOF'
# Sourced by /init before its final report: runs iperf3 when tg.iperf=SERVER is given and
# prints its JSON report, each line prefixed with TAPGATE-IPERF.
iperf_server=''
iperf_time=10
# shellcheck disable=SC2013
for word in $(cat /proc/cmdline); do
  case "$word" in
    tg.iperf=*) iperf_server="${word#*=}" ;;
    tg.iperftime=*) iperf_time="${word#*=}" ;;
  esac
done
if [ -n "$iperf_server" ]; then
  if /usr/bin/iperf3 -c "$iperf_server" -t "$iperf_time" -J >/tmp/iperf.json 2>&1; then
    report iperf=ok
  else
    report iperf=fail
  fi
  sed 's/^/TAPGATE-IPERF /' /tmp/iperf.json
fi
EOF

# Copy iperf3 and every library the loader resolves for it to the same paths in the guest.
iperf_binary="$(dpkg-query -L iperf3 | grep -x '/usr/bin/iperf3')" || die "package iperf3 contains no /usr/bin/iperf3"
install -D -m 0755 "$iperf_binary" "$root_dir/usr/bin/iperf3"
ldd_output="$(ldd "$iperf_binary")"
if grep -q 'not found' <<<"$ldd_output"; then
  die "iperf3 links libraries that are missing on this host: $(grep 'not found' <<<"$ldd_output" | tr '\n' ' ')"
fi
while read -r library; do
  mkdir -p "$root_dir$(dirname "$library")"
  cp -L "$library" "$root_dir$library"
done < <(grep -o '/[^ ]*' <<<"$ldd_output")

# Running it in the new tree proves that every library it needs is there.
chroot "$root_dir" /usr/bin/iperf3 --version >/dev/null ||
  die "iperf3 does not run inside the guest tree; see the loader error above"

log "packing initramfs"
(cd "$root_dir" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -9 -n >"$work_dir/initramfs.cpio.gz"
install -m 0644 "$work_dir/initramfs.cpio.gz" "$out_dir/initramfs.cpio.gz.new"
mv -f "$out_dir/initramfs.cpio.gz.new" "$out_dir/initramfs.cpio.gz"
printf '%s\n' "$expected_stamp" >"$out_dir/build.stamp.new"
chmod 0644 "$out_dir/build.stamp.new" "$out_dir/.lock"
mv -f "$out_dir/build.stamp.new" "$stamp_file"
log "built benchmark guest with iperf3 $iperf_version in $out_dir"
