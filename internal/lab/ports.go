package lab

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// handedOut remembers every port this process picked, so two realms (or a
// realm and DownAddr) in one test binary never get the same number between
// the probe bind and the daemon's bind.
var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// freePort returns a loopback port number that is free for both TCP and UDP
// right now.
func freePort() (int, error) {
	for range 50 {
		port, err := bindBoth()
		if err != nil {
			continue
		}
		portsMu.Lock()
		dup := handedOut[port]
		handedOut[port] = true
		portsMu.Unlock()
		if !dup {
			return port, nil
		}
	}
	return 0, errors.New("lab: no free loopback port for both TCP and UDP")
}

func bindBoth() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return 0, fmt.Errorf("udp %d busy: %w", port, err)
	}
	u.Close()
	return port, nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// DownAddr returns a loopback address on which nothing listens, over TCP or
// UDP: the harness binds the port on both, closes it, and never hands it out
// again. Use it as a dead KDC in a krb5.conf.
func (r *Realm) DownAddr() string {
	port, err := freePort()
	if err != nil {
		// Port 9 (discard) is not served on a test machine either.
		return "127.0.0.1:9"
	}
	return loopback(port)
}
