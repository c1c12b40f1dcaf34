// A CoreDNS with only the plugins ganforge's one-machine cluster uses.
//
// hack/tools.sh copies this file next to a generated go.mod that requires
// github.com/coredns/coredns at COREDNS_VERSION and builds it. Compiling in a handful of
// plugins instead of CoreDNS's full set (cloud DNS providers, etcd, dnstap, ...) roughly halves
// the build on a small machine and keeps the binary's surface to what the Corefile needs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Each import registers one plugin; a Corefile directive without one here fails to load.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives lists the compiled-in plugins in the order CoreDNS's own plugin.cfg gives them:
// a query passes through plugins in this order whatever order the Corefile writes them in.
// whoami is kept because CoreDNS falls back to it when started without a Corefile.
var directives = []string{
	"bind",
	"ready",
	"health",
	"errors",
	"log",
	"cache",
	"kubernetes",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
