#!/usr/bin/env bash
# Buildroot post-image script for the nordlys receiver: puts nordlys.toml (and an
# event torrent, if one is given) on the boot partition and assembles sdcard.img.
#
# Environment (set by Buildroot): BINARIES_DIR, BUILD_DIR.
# Optional: NORDLYS_EVENT_TORRENT=/path/to/event.torrent to ship a torrent on the card.
# scripts/image-smoke-test runs this same script outside Buildroot.
set -euo pipefail

BOARD_DIR="$(cd "$(dirname "$0")" && pwd)"
# board/ and overlay/ sit side by side at the top of the repository.
OVERLAY_DIR="$(cd "${BOARD_DIR}/../overlay" && pwd)"
: "${BINARIES_DIR:?BINARIES_DIR must be set}"
GENIMAGE_CFG="${BINARIES_DIR}/genimage.cfg"
GENIMAGE_TMP="${BUILD_DIR:-${BINARIES_DIR}}/genimage.tmp"

# The venue technician's config file, on the FAT partition.
cp "${OVERLAY_DIR}/etc/nordlys/nordlys.toml" "${BINARIES_DIR}/nordlys.toml"
if [ -n "${NORDLYS_EVENT_TORRENT:-}" ]; then
	cp "${NORDLYS_EVENT_TORRENT}" "${BINARIES_DIR}/event.torrent"
fi

# Everything of the boot partition: device trees, firmware (rpi-firmware/*,
# including overlays/), the kernel, our files.
FILES=()
for f in "${BINARIES_DIR}"/*.dtb "${BINARIES_DIR}"/rpi-firmware/*; do
	[ -e "$f" ] && FILES+=("${f#"${BINARIES_DIR}/"}")
done
for f in Image nordlys.toml event.torrent; do
	[ -e "${BINARIES_DIR}/$f" ] && FILES+=("$f")
done
if [ ! -e "${BINARIES_DIR}/Image" ]; then
	echo "post-image.sh: no kernel Image in ${BINARIES_DIR}" >&2
	exit 1
fi

BOOT_FILES=$(printf '\t\t\t"%s",\n' "${FILES[@]}")
BOOT_FILES="${BOOT_FILES%,}"
awk -v files="${BOOT_FILES}" '{ if ($0 == "#BOOT_FILES#") print files; else print }' \
	"${BOARD_DIR}/genimage.cfg.in" > "${GENIMAGE_CFG}"

# genimage wants an empty root path (the rootfs is already rootfs.ext4).
ROOTPATH_TMP="$(mktemp -d)"
trap 'rm -rf "${ROOTPATH_TMP}"' EXIT
rm -rf "${GENIMAGE_TMP}"

genimage \
	--rootpath "${ROOTPATH_TMP}" \
	--tmppath "${GENIMAGE_TMP}" \
	--inputpath "${BINARIES_DIR}" \
	--outputpath "${BINARIES_DIR}" \
	--config "${GENIMAGE_CFG}"
