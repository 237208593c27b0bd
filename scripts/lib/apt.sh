# apt_get ARGS...: apt-get, waiting for another apt or dpkg (unattended-upgrades, a desktop
# updater, a second terminal) to let go of its locks instead of failing at once with
# "Could not get lock". Waits up to APT_LOCK_WAIT seconds (default 600), saying so once.
# Quiet when it works; apt's output goes to stderr when it fails.
# Sourced by scripts/bootstrap and scripts/build-image.

apt_get() {
  local deadline=$((SECONDS + ${APT_LOCK_WAIT:-600})) said="" out status
  while :; do
    status=0
    # DPkg::Lock::Timeout makes apt itself wait for dpkg's frontend lock; the loop covers
    # the other locks (lists, archives) and apt versions without that option.
    out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=5 "$@" 2>&1) || status=$?
    if [ "$status" -eq 0 ]; then
      return 0  # quiet when it worked; its output is shown when it did not
    fi
    if grep -qE 'Could not get lock|Unable to acquire|Unable to lock|is held by process' <<<"$out" \
        && [ "$SECONDS" -lt "$deadline" ]; then
      if [ -z "$said" ]; then
        echo "apt: another apt or dpkg is running; waiting for it to finish (up to ${APT_LOCK_WAIT:-600}s)..." >&2
        said=1
      fi
      sleep 2
      continue
    fi
    printf '%s\n' "$out" >&2
    return "$status"
  done
}
