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
