################################################################################
#
# nordlys
#
################################################################################

NORDLYS_VERSION = 0.1.0
# The source is the repository this BR2_EXTERNAL tree lives in.
NORDLYS_SITE = $(BR2_EXTERNAL_NORDLYS_PATH)/..
NORDLYS_SITE_METHOD = local
NORDLYS_LICENSE = MIT or Apache-2.0
NORDLYS_DEPENDENCIES = gstreamer1 gst1-plugins-base host-pkgconf

# Do not copy build output, sysroots, images, this tree or the board files and
# rootfs overlay into the build directory.
NORDLYS_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/.sysroot --exclude=/buildroot \
	--exclude=/board --exclude=/overlay --exclude='*.img'

# gstreamer-sys finds GStreamer in staging through Buildroot's pkgconf wrapper.
NORDLYS_CARGO_ENV = PKG_CONFIG_ALLOW_CROSS=1
NORDLYS_CARGO_INSTALL_OPTS = --bin nordlys

# A local source skips Buildroot's download step, and with it the cargo
# vendoring that the cargo infrastructure does as a download post-process.
# So vendor here, before the (offline) build: either the tree already holds
# VENDOR/ and .cargo/config.toml (made by scripts/vendor, for builds without
# network), or cargo vendor fetches the crates pinned by Cargo.lock into the
# build directory, using Buildroot's shared cargo home as cache.
define NORDLYS_CARGO_VENDOR
	if [ ! -d $(@D)/VENDOR ]; then \
		mkdir -p $(@D)/.cargo && \
		cd $(@D) && \
		$(TARGET_MAKE_ENV) $(PKG_CARGO_ENV) \
			cargo vendor --locked VENDOR > $(@D)/.cargo/config.toml.vendor && \
		cat $(@D)/.cargo/config.toml.vendor >> $(@D)/.cargo/config.toml && \
		rm -f $(@D)/.cargo/config.toml.vendor; \
	fi
endef
NORDLYS_PRE_BUILD_HOOKS += NORDLYS_CARGO_VENDOR

$(eval $(cargo-package))
