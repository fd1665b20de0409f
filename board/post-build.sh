#!/bin/sh
# Buildroot post-build script for the nordlys receiver.
# $1: target directory. $BR2_EXTERNAL_NORDLYS_PATH is exported by Buildroot.
set -eu

TARGET_DIR="$1"

# overlay/README.md documents the overlay; it does not belong in the image.
rm -f "${TARGET_DIR}/README.md"

# Mount point of the SD card's FAT partition (boot.mount, read-only).
mkdir -p "${TARGET_DIR}/boot"

# Enable the receiver and the boot partition mount (Buildroot also runs
# systemctl preset-all, which enables them; this keeps it explicit).
mkdir -p "${TARGET_DIR}/etc/systemd/system/multi-user.target.wants" \
	"${TARGET_DIR}/etc/systemd/system/local-fs.target.wants"
ln -sf /usr/lib/systemd/system/nordlys.service \
	"${TARGET_DIR}/etc/systemd/system/multi-user.target.wants/nordlys.service"
ln -sf /usr/lib/systemd/system/boot.mount \
	"${TARGET_DIR}/etc/systemd/system/local-fs.target.wants/boot.mount"

# The receiver owns the display: no login prompt on the HDMI console.
rm -f "${TARGET_DIR}/etc/systemd/system/getty.target.wants/getty@tty1.service"

# Hardware watchdog: systemd pets it and reboots a hung system.
mkdir -p "${TARGET_DIR}/etc/systemd/system.conf.d"
cat > "${TARGET_DIR}/etc/systemd/system.conf.d/nordlys-watchdog.conf" <<'CONF'
[Manager]
RuntimeWatchdogSec=30s
RebootWatchdogSec=2min
CONF
