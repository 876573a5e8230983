################################################################################
#
# proxyha
#
################################################################################

# The version is Cargo.toml's; PROXYHA_VERSION=X.Y.Z in the environment builds another one
# (release builds: the binary reads the same variable, see image/build.sh).
PROXYHA_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(BR2_EXTERNAL_PROXYHA_PATH)/../Cargo.toml | head -n 1)
PROXYHA_SITE = $(BR2_EXTERNAL_PROXYHA_PATH)/..
PROXYHA_SITE_METHOD = local
PROXYHA_LICENSE = Apache-2.0
PROXYHA_LICENSE_FILES = LICENSE
# Anchored at the top of the source tree: cargo's output and the offline image build's.
PROXYHA_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude=/target --exclude=/image/out
PROXYHA_CARGO_ENV = PROXYHA_VERSION=$(PROXYHA_VERSION)

# A local cargo package gets no vendoring at download time, and the build runs
# cargo --offline --locked with CARGO_HOME=$(BR_CARGO_HOME): fetch the crates of
# Cargo.lock into that cache first (nothing to fetch when it is already complete,
# e.g. filled beforehand with `cargo fetch --locked` for an offline build).
define PROXYHA_CARGO_FETCH
	cd $(@D) && \
	( $(TARGET_MAKE_ENV) $(PKG_CARGO_ENV) \
		cargo fetch --locked --offline --manifest-path Cargo.toml 2>/dev/null || \
	$(TARGET_MAKE_ENV) $(PKG_CARGO_ENV) \
		cargo fetch --locked --manifest-path Cargo.toml )
endef
PROXYHA_PRE_BUILD_HOOKS += PROXYHA_CARGO_FETCH

$(eval $(cargo-package))
