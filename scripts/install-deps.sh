#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that tapgate's tests, demo and benchmarks use, when missing.
set -euo pipefail

packages=(
  iproute2            # ip: namespaces, bridges, the netlink test oracle
  util-linux          # setpriv: run commands as the test users
  passwd              # useradd, groupadd
  qemu-system-x86     # the guest, and qemu-bridge-helper for comparison
  busybox-static      # the guest's userland
  cpio                # packing the guest's initramfs
  dnsmasq-base        # DHCP for guests
  nftables            # filtering and NAT
  iptables            # diagnosing foreign FORWARD rules
  iperf3              # data-plane benchmark
  passt               # data-plane comparison
  procps              # ps, pgrep
  kmod                # modinfo, for the guest build
  libcap2-bin         # getcap: the installed helper must carry no file capabilities
  python3             # small socketpair peers in tests
  gcc                 # the native tapgate-helper (native/tapgate-helper.c)
  libc6-dev           # its libc headers
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run this script as root to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
