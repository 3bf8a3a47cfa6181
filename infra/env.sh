# Shared settings for infra/ scripts (sourced). Every value can be overridden from the environment.
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(dirname "$INFRA_DIR")"
BIN_DIR="$INFRA_DIR/bin"
export E3_DATA_DIR="${E3_DATA_DIR:-$ROOT_DIR/.e3}"
export E3_TEMPORAL_PORT="${E3_TEMPORAL_PORT:-7233}"
export E3_TEMPORAL_UI_PORT="${E3_TEMPORAL_UI_PORT:-8233}"
export E3_TEMPORAL_METRICS_PORT="${E3_TEMPORAL_METRICS_PORT:-$((E3_TEMPORAL_PORT + 2))}"
export E3_TEMPORAL_HTTP_PORT="${E3_TEMPORAL_HTTP_PORT:-$((E3_TEMPORAL_PORT + 1))}"
export E3_S3_PORT="${E3_S3_PORT:-7070}"
export E3_NAMESPACE="${E3_NAMESPACE:-default}"
PID_DIR="$E3_DATA_DIR/pids"
LOG_DIR="$E3_DATA_DIR/logs"
# Search attributes the workflows set (docs/ARCHITECTURE.md: run, node, iteration, budget, pass@1).
SEARCH_ATTRIBUTES=(E3Run=Keyword E3Node=Keyword E3Iteration=Int E3Budget=Int E3PassAt1=Double E3Config=Keyword E3Lineage=Keyword)

ts() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(ts)" 'BEGIN { printf "%.1fs", b - a }'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -f "$PID_DIR/$1.pid" ] && cat "$PID_DIR/$1.pid"; }
# The ports a component binds (infra/down waits for them to close, infra/up for them to be free).
component_ports() {
  case "$1" in
    temporal) echo "$E3_TEMPORAL_PORT $E3_TEMPORAL_UI_PORT $E3_TEMPORAL_HTTP_PORT $E3_TEMPORAL_METRICS_PORT" ;;
    s3) echo "$E3_S3_PORT" ;;
  esac
}
# wait_until <tenths> <command...>: poll every 0.1 s; status 0 once the command succeeds, 1 on time-out.
wait_until() { local n=$1; shift; for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done; "$@"; }
# Gone: reaped, not only exited (the smoke test checks that the recorded pid no longer exists).
pid_gone() { ! pid_alive "$1"; }
ports_closed() { local p; for p in "$@"; do port_open "$p" && return 1; done; return 0; }
