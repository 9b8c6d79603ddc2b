#!/usr/bin/env bash
# Build the tiny test guest that end-to-end tests and the demo boot under QEMU:
#   .cache/guest/vmlinuz            the kernel of the distribution's current
#                                   generic kernel package (Debian 12 tested)
#   .cache/guest/initramfs.cpio.gz  busybox, the virtio network modules and an
#                                   /init that follows tg.* kernel parameters
#
# Run as root on Debian 12 or Ubuntu. The kernel package is fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`; nothing is installed.
# The build is skipped when both files exist and .cache/guest/build.stamp
# records the SHA-256 of this script, so a new kernel in the apt lists does not
# trigger a rebuild until this script changes or the stamp is deleted.
#
# Kernel parameters that /init reads (all optional):
#   tg.ip=ADDR/PREFIX  static IPv4 address on eth0
#   tg.dhcp=1          run udhcpc on eth0 instead (address, prefix, router)
#   tg.mtu=N           eth0 MTU, set before the link comes up
#   tg.ping=ADDR       ping ADDR 3 times, waiting up to 2 s for replies
#   tg.pingsize=N      ICMP payload size in bytes for tg.ping
#   tg.verbose=1       keep kernel messages on the console
# /init writes these lines to ttyS0 and then powers off:
#   TAPGATE-GUEST boot | mac=MAC | ip=ADDR/PREFIX | dhcp=ok|fail
#   TAPGATE-GUEST ping=ok|fail TARGET | error=WHAT | done
set -euo pipefail

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo_root="$(cd "$(dirname "$script_path")/.." && pwd)"
out_dir="$repo_root/.cache/guest"
stamp_file="$out_dir/build.stamp"
script_hash="$(sha256sum "$script_path" | cut -d' ' -f1)"

# Modules that give the guest a virtio-net NIC on QEMU's PCI bus. Their
# dependencies are added from each module's own `depends=` field.
readonly ROOT_MODULES=(virtio_pci virtio_net)

log() { printf 'build-guest: %s\n' "$*"; }
die() { printf 'build-guest: error: %s\n' "$*" >&2; exit 1; }

cache_is_current() {
  [[ -f "$out_dir/vmlinuz" && -f "$out_dir/initramfs.cpio.gz" && -f "$stamp_file" ]] &&
    grep -qx "script-sha256 $script_hash" "$stamp_file"
}

if cache_is_current; then
  log "using cached guest in $out_dir"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root to build the guest (apt-get download, mknod); run: sudo $script_path"
for tool in apt-get apt-cache dpkg-deb dpkg-query cpio gzip sha256sum flock mknod; do
  command -v "$tool" >/dev/null || die "required tool '$tool' is missing; install the package that provides it"
done

mkdir -p "$out_dir"
chmod 0755 "$repo_root/.cache" "$out_dir"

# Serialize concurrent builds. Check the cache again after taking the lock,
# because another process may have finished the same build in the meantime.
exec 9>"$out_dir/.lock"
flock 9
if cache_is_current; then
  log "using cached guest in $out_dir"
  exit 0
fi

work_dir="$(mktemp -d /tmp/tapgate-guest.XXXXXX)"
chmod 0711 "$work_dir"
trap 'rm -rf "$work_dir"' EXIT
download_dir="$work_dir/debs"
tree_dir="$work_dir/tree"
root_dir="$work_dir/initramfs"
mkdir -p "$download_dir" "$tree_dir" "$root_dir"
# apt drops privileges to _apt while downloading and warns when that user
# cannot write the target folder.
if id _apt >/dev/null 2>&1; then chown _apt "$download_dir"; fi

lists_refreshed=0
refresh_lists_once() {
  ((lists_refreshed == 0)) || return 1
  lists_refreshed=1
  log "package lists look missing or stale; running apt-get update"
  apt-get update -qq || die "apt-get update failed"
}

# Print the names that the candidate version of package $1 depends on, one a
# line, alternatives included.
package_depends() {
  apt-cache depends --important "$1" 2>/dev/null |
    sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^<> ]*\)$/\2/p'
}

package_exists() {
  apt-cache show --no-all-versions "$1" >/dev/null 2>&1
}

package_version() {
  apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n1
}

# Download package $1 into $download_dir, refreshing the lists once on failure.
download_package() {
  local package="$1" output
  if output="$(cd "$download_dir" && apt-get download "$package" 2>&1)"; then
    return 0
  fi
  if refresh_lists_once && output="$(cd "$download_dir" && apt-get download "$package" 2>&1)"; then
    return 0
  fi
  die "package '$package' could not be downloaded with apt-get download: $output"
}

fetch_and_extract() {
  local package="$1" deb
  log "downloading $package $(package_version "$package")"
  download_package "$package"
  for deb in "$download_dir/${package}_"*.deb; do
    [[ -f "$deb" ]] || die "apt-get download of '$package' left no .deb file in $download_dir"
    dpkg-deb -x "$deb" "$tree_dir"
  done
}

# Resolve the versioned kernel image package behind the distribution's meta
# package: Debian's linux-image-amd64 depends on linux-image-<abi>-amd64, and
# Ubuntu's linux-image-generic on linux-image-<abi>-generic.
resolve_kernel_package() {
  local meta candidate
  for meta in linux-image-amd64 linux-image-generic; do
    if package_exists "$meta"; then
      candidate="$(package_depends "$meta" | grep -E '^linux-image-(unsigned-)?[0-9]' | head -n1 || true)"
      if [[ -n "$candidate" ]]; then
        printf '%s %s\n' "$meta" "$candidate"
        return 0
      fi
    fi
  done
  return 1
}

if ! kernel_resolution="$(resolve_kernel_package)"; then
  refresh_lists_once || true
  kernel_resolution="$(resolve_kernel_package)" ||
    die "no kernel package found: neither linux-image-amd64 (Debian) nor linux-image-generic (Ubuntu) resolves to a linux-image-<version> package in the apt lists"
fi
meta_package="${kernel_resolution%% *}"
kernel_package="${kernel_resolution#* }"
log "kernel: $meta_package -> $kernel_package"
fetch_and_extract "$kernel_package"

# Ubuntu splits the modules and modules.builtin into linux-modules-<abi>, a
# dependency of the image package. Debian's image package contains them.
# NOTE: the Ubuntu branches of this script have only been run on Debian 12,
# where they do nothing.
for package in $(package_depends "$kernel_package" | grep -E '^linux-modules-[0-9]' || true); do
  fetch_and_extract "$package"
done

vmlinuz_files=("$tree_dir"/boot/vmlinuz-*)
[[ -f "${vmlinuz_files[0]}" ]] || die "package '$kernel_package' contains no /boot/vmlinuz-*"
kernel_release="${vmlinuz_files[0]##*/vmlinuz-}"
modules_dir=""
for candidate in "$tree_dir/lib/modules/$kernel_release" "$tree_dir/usr/lib/modules/$kernel_release"; do
  if [[ -d "$candidate" ]]; then modules_dir="$candidate"; fi
done
[[ -n "$modules_dir" ]] || die "no modules folder for kernel $kernel_release in '$kernel_package'"

# Map each module name (with '-' read as '_', as the kernel does) to its file,
# and collect the modules compiled into the kernel image.
declare -A module_file=() builtin_module=()
index_modules() {
  local path name
  module_file=()
  while IFS= read -r path; do
    name="${path##*/}"
    name="${name%%.ko*}"
    module_file["${name//-/_}"]="$path"
  done < <(find "$modules_dir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
  if [[ -f "$modules_dir/modules.builtin" ]]; then
    while IFS= read -r path; do
      name="${path##*/}"
      name="${name%.ko}"
      builtin_module["${name//-/_}"]=1
    done <"$modules_dir/modules.builtin"
  fi
}
index_modules

# Ubuntu keeps some drivers in linux-modules-extra-<abi>. Fetch it only when a
# needed module is neither a module file nor built in.
for module in "${ROOT_MODULES[@]}"; do
  if [[ -z "${module_file[$module]:-}" && -z "${builtin_module[$module]:-}" ]]; then
    extra_package="linux-modules-extra-$kernel_release"
    if package_exists "$extra_package"; then
      fetch_and_extract "$extra_package"
      index_modules
    fi
    break
  fi
done

staged_modules_dir="$root_dir/lib/modules"
mkdir -p "$staged_modules_dir"

# Copy module $1 into the initramfs as an uncompressed .ko, so that loading it
# depends on neither busybox's nor the kernel's decompression support.
stage_module() {
  local name="$1" source="${module_file[$1]}" target="$staged_modules_dir/$1.ko"
  case "$source" in
    *.ko) cp "$source" "$target" ;;
    *.ko.xz) xz -dc "$source" >"$target" || die "xz failed to decompress $source" ;;
    *.ko.zst) zstd -qdc "$source" >"$target" || die "zstd failed to decompress $source" ;;
    *.ko.gz) gzip -dc "$source" >"$target" ;;
  esac
}

module_depends() {
  tr '\0' '\n' <"$staged_modules_dir/$1.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# Depth-first walk over `depends=`: a module goes into load_order after all of
# its dependencies.
declare -A module_state=()
load_order=()
resolve_module() {
  local name="${1//-/_}" dependency
  case "${module_state[$name]:-}" in
    resolved) return 0 ;;
    visiting) die "module dependency cycle through '$name'" ;;
  esac
  if [[ -z "${module_file[$name]:-}" ]]; then
    [[ -n "${builtin_module[$name]:-}" ]] && { module_state[$name]=resolved; return 0; }
    die "module '$name' is neither a module file nor built into kernel $kernel_release ($kernel_package)"
  fi
  module_state[$name]=visiting
  stage_module "$name"
  for dependency in $(module_depends "$name"); do
    resolve_module "$dependency"
  done
  module_state[$name]=resolved
  load_order+=("$name")
}
for module in "${ROOT_MODULES[@]}"; do
  resolve_module "$module"
done
printf '%s\n' "${load_order[@]}" >"$staged_modules_dir/load-order"
log "modules to load: ${load_order[*]:-(none, all built in)}"

# Busybox must be the static build, because the initramfs has no libc.
# busybox-static conflicts with the dynamic busybox package, so it is
# downloaded and unpacked, not installed, when it is missing.
mkdir -p "$root_dir/bin"
if [[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" == "install ok installed" ]]; then
  cp /bin/busybox "$root_dir/bin/busybox"
else
  fetch_and_extract busybox-static
  cp "$tree_dir/bin/busybox" "$root_dir/bin/busybox" || die "package busybox-static contains no /bin/busybox"
fi
chmod 0755 "$root_dir/bin/busybox"
ln -s busybox "$root_dir/bin/sh"

mkdir -p "$root_dir"/{dev,proc,sys,tmp,etc,run}
mknod -m 0600 "$root_dir/dev/console" c 5 1
mknod -m 0666 "$root_dir/dev/null" c 1 3

cat >"$root_dir/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# Apply a busybox udhcpc lease to $interface: $ip, $mask (prefix length) and
# the first address in $router.
# shellcheck disable=SC2154
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      # shellcheck disable=SC2086
      set -- $router
      ip route replace default via "$1" dev "$interface"
    fi
    ;;
esac
exit 0
EOF
chmod 0755 "$root_dir/etc/udhcpc.script"

cat >"$root_dir/init" <<'EOF'
#!/bin/sh
# Test guest init: configure eth0 from the tg.* kernel parameters, report on
# the serial console with the TAPGATE-GUEST prefix, then power off.
/bin/busybox --install -s /bin
export PATH=/bin

report() { echo "TAPGATE-GUEST $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

ip_param=''
dhcp_param=''
mtu_param=''
ping_param=''
pingsize_param=''
verbose_param=''
# Kernel parameters are separated by spaces, so values cannot contain one.
set -f
# shellcheck disable=SC2013
for word in $(cat /proc/cmdline); do
  case "$word" in
    tg.ip=*) ip_param="${word#*=}" ;;
    tg.dhcp=*) dhcp_param="${word#*=}" ;;
    tg.mtu=*) mtu_param="${word#*=}" ;;
    tg.ping=*) ping_param="${word#*=}" ;;
    tg.pingsize=*) pingsize_param="${word#*=}" ;;
    tg.verbose=*) verbose_param="${word#*=}" ;;
  esac
done
# Keep kernel messages from splitting the report lines.
[ "$verbose_param" = 1 ] || echo 1 >/proc/sys/kernel/printk

report boot

while read -r module; do
  insmod "/lib/modules/$module.ko" || report "error=insmod $module"
done </lib/modules/load-order

ip link set lo up

# The NIC is normally probed while virtio_net loads. Wait up to 5 s in case
# the probe runs asynchronously.
tries=0
while [ ! -e /sys/class/net/eth0 ] && [ "$tries" -lt 50 ]; do
  sleep 0.1
  tries=$((tries + 1))
done

if [ -e /sys/class/net/eth0 ]; then
  report "mac=$(cat /sys/class/net/eth0/address)"
  if [ -n "$mtu_param" ]; then
    ip link set eth0 mtu "$mtu_param" || report "error=mtu $mtu_param"
  fi
  ip link set eth0 up

  if [ "$dhcp_param" = 1 ]; then
    if udhcpc -i eth0 -n -q -t 10 -s /etc/udhcpc.script >/tmp/udhcpc.log 2>&1; then
      report dhcp=ok
    else
      report dhcp=fail
    fi
  elif [ -n "$ip_param" ]; then
    ip addr add "$ip_param" dev eth0 || report "error=ip $ip_param"
  fi

  address="$(ip -4 addr show dev eth0 | awk '$1 == "inet" { print $2; exit }')"
  [ -n "$address" ] && report "ip=$address"
else
  report "error=no eth0"
fi

if [ -n "$ping_param" ]; then
  set -- -c 3 -W 2
  [ -n "$pingsize_param" ] && set -- "$@" -s "$pingsize_param"
  if ping "$@" "$ping_param" >/tmp/ping.log 2>&1; then
    report "ping=ok $ping_param"
  else
    report "ping=fail $ping_param"
  fi
fi

report "done"
sync
poweroff -f
EOF
chmod 0755 "$root_dir/init"

log "packing initramfs"
(cd "$root_dir" && find . -print0 | LC_ALL=C sort -z |
  cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -9 -n >"$work_dir/initramfs.cpio.gz"

install -m 0644 "${vmlinuz_files[0]}" "$out_dir/vmlinuz.new"
install -m 0644 "$work_dir/initramfs.cpio.gz" "$out_dir/initramfs.cpio.gz.new"
mv -f "$out_dir/vmlinuz.new" "$out_dir/vmlinuz"
mv -f "$out_dir/initramfs.cpio.gz.new" "$out_dir/initramfs.cpio.gz"
{
  echo "script-sha256 $script_hash"
  echo "kernel-package $kernel_package $(package_version "$kernel_package")"
  echo "kernel-release $kernel_release"
  echo "modules ${load_order[*]}"
} >"$out_dir/build.stamp.new"
chmod 0644 "$out_dir/build.stamp.new" "$out_dir/.lock"
mv -f "$out_dir/build.stamp.new" "$stamp_file"
log "built guest for kernel $kernel_release in $out_dir"
