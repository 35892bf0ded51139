package lab

import (
	"strconv"

	"github.com/krbops/krbops/internal/spawn"
)

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// DownAddr returns a loopback address on which nothing listens, over TCP or
// UDP: the harness binds the port on both, closes it, and never hands it out
// again. Use it as a dead KDC in a krb5.conf.
func (r *Realm) DownAddr() string {
	port, err := spawn.FreePort()
	if err != nil {
		// Port 9 (discard) is not served on a test machine either.
		return "127.0.0.1:9"
	}
	return loopback(port)
}
