# Shared by scripts/setup_env*.sh (sourced, not run).

# check_torch VENV TAG: fail loudly unless pip installed torch 2.14.1 into VENV; prints the version.
check_torch() {
    local got
    got=$("$1/bin/python" -c "import torch; print(torch.__version__)")
    case "$got" in
        2.14.1*) echo "$got" ;;
        *) echo "[$2] ERROR: expected torch 2.14.1 in $1, pip installed $got; remove $1 and re-run" >&2
           return 1 ;;
    esac
}

# install_checkout CHECKOUT PIP...: PIP --no-deps -e CHECKOUT, one venv at a time where flock exists
# (.ci/run builds both venvs at once, and each editable install rewrites solo_ncp.egg-info there).
install_checkout() {
    local checkout=$1
    shift
    if command -v flock >/dev/null; then
        flock "$checkout/.venv-setup.lock" "$@" --no-deps -e "$checkout"
    else
        "$@" --no-deps -e "$checkout"
    fi
}
