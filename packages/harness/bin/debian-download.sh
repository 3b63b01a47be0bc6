# Sourced by the provisioning scripts: downloads Debian packages into a project-local dir without
# touching the system's apt configuration (a private sources list, lists dir and cache dir).
#
#   debian_download <suite> <work dir> <package>...   # the .deb files land in <work dir>/deb
debian_download() {
  local suite="$1" apt="$2"
  shift 2
  local mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local signed=""
  [ -f "$keyring" ] && signed="[signed-by=$keyring] "
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
  echo "deb ${signed}$mirror $suite main" >"$apt/sources.list"
  local opts=(-q -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
    -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
  if ! apt-get "${opts[@]}" update >"$apt/update.log" 2>&1; then
    echo "could not read Debian's $suite package list (see $apt/update.log)" >&2
    return 1
  fi
  rm -f "$apt"/deb/*.deb
  (cd "$apt/deb" && apt-get "${opts[@]}" download "$@" >"$apt/download.log" 2>&1) || {
    echo "could not download $* from Debian $suite (see $apt/download.log)" >&2
    return 1
  }
}
