# shellcheck shell=bash
# Sourced by both builds (image/build.sh, buildroot-external/scripts/post-build.sh and
# post-image.sh): chooses the key that signs the update bundle and whose public half goes into
# the root slot's keyring, and exports PROXYHA_SIGNING_KEY and PROXYHA_SIGNING_PUB.
#
#   signing_key DIR    # DIR/keys holds the development key when no PROXYHA_SIGNING_KEY is set
#
# PROXYHA_SIGNING_KEY=FILE: a minisign secret key; its public half is PROXYHA_SIGNING_PUB
# (default: FILE with .key replaced by .pub). Unset: a development key in DIR/keys/ (generated
# once; never committed, never for production) signs, and the build says so.
signing_key() {
	local dir=$1
	if [ -n "${PROXYHA_SIGNING_KEY:-}" ]; then
		PROXYHA_SIGNING_PUB=${PROXYHA_SIGNING_PUB:-${PROXYHA_SIGNING_KEY%.key}.pub}
		[ -f "$PROXYHA_SIGNING_KEY" ] || { echo "PROXYHA_SIGNING_KEY=$PROXYHA_SIGNING_KEY: no such file" >&2; return 1; }
		[ -f "$PROXYHA_SIGNING_PUB" ] ||
			{ echo "public half of $PROXYHA_SIGNING_KEY not found at $PROXYHA_SIGNING_PUB; set PROXYHA_SIGNING_PUB" >&2; return 1; }
		echo "signing key: $PROXYHA_SIGNING_KEY" >&2
	else
		PROXYHA_SIGNING_KEY=$dir/keys/dev.key
		PROXYHA_SIGNING_PUB=$dir/keys/dev.pub
		if [ ! -f "$PROXYHA_SIGNING_KEY" ]; then
			command -v minisign >/dev/null || { echo "minisign is needed to generate the development signing key" >&2; return 1; }
			mkdir -p "$dir/keys"
			minisign -G -W -p "$PROXYHA_SIGNING_PUB" -s "$PROXYHA_SIGNING_KEY" >/dev/null
			echo "signing key: generated a DEVELOPMENT key $PROXYHA_SIGNING_KEY (no PROXYHA_SIGNING_KEY); not for production" >&2
		else
			echo "signing key: the DEVELOPMENT key $PROXYHA_SIGNING_KEY (no PROXYHA_SIGNING_KEY); not for production" >&2
		fi
	fi
	export PROXYHA_SIGNING_KEY PROXYHA_SIGNING_PUB
}
