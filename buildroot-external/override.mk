################################################################################
#
# override
#
################################################################################

# BR2_PACKAGE_OVERRIDE_FILE of configs/proxyha_x86_64_defconfig: Buildroot's
# Makefile includes it before the package makefiles. proxyha needs Rust >= 1.88
# (edition 2024; time 0.3.55, through syslog 7, declares 1.88); Buildroot
# 2025.02.x ships rust-bin 1.82.0. `override` makes the pin win over the plain
# assignment in package/rust-bin/rust-bin.mk. 1.88.0 is the version Buildroot
# 2025.11 ships; its hashes are in patches/rust-bin/1.88.0/rust-bin.hash
# (BR2_GLOBAL_PATCH_DIR), checked beside Buildroot's own rust-bin.hash.
override RUST_BIN_VERSION = 1.88.0

# A local.mk in the output directory (<pkg>_OVERRIDE_SRCDIR, Buildroot's
# default override file) still works beside this one.
-include $(CONFIG_DIR)/local.mk
