//go:build tools

// Package infra pins the real servers e3 runs on (and toxiproxy, which test/cluster puts between
// workers and servers); infra/install builds them with `go build`.
package infra

import (
	_ "github.com/Shopify/toxiproxy/v2/cmd/server"
	_ "github.com/temporalio/cli/cmd/temporal"
	_ "github.com/versity/versitygw/cmd/versitygw"
)
