// Command coredns is CoreDNS trimmed to what the e2e tier's node needs (see tests/e2e/node_harness.py):
// it answers the cluster domain and the cluster's reverse zones from the API server. No plugin that
// could send a query upstream (forward, grpc, etcd, the cloud DNS plugins, ...) is compiled in, so
// the binary cannot forward a name outside the cluster even if a Corefile asked it to.
package main

import (
	"github.com/coredns/coredns/coremain"

	// The plugins this build registers; the order they run in comes from CoreDNS's own directive list.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
