//go:build tools

// Package infra pins the real servers e3 runs on; infra/install builds them with `go build`.
package infra

import (
	_ "github.com/temporalio/cli/cmd/temporal"
	_ "github.com/versity/versitygw/cmd/versitygw"
)
