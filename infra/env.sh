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
