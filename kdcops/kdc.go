package kdcops

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// Transport is how a KDC is reached.
type Transport string

const (
	UDP Transport = "udp"
	TCP Transport = "tcp"
)

// KDC is one KDC address of a realm, as configured.
type KDC struct {
	Entry     string    // as written in krb5.conf or --kdc, for messages
	Host      string    // host name or IP, no brackets
	Port      int       // default 88
	Transport Transport // preferred transport
	// Forced is true when the entry named its transport (tcp/ or udp/
	// prefix): then the other transport is never tried.
	Forced bool
}

// Addr is host:port for net.Dial.
func (k KDC) Addr() string { return net.JoinHostPort(k.Host, strconv.Itoa(k.Port)) }

// ParseKDC parses a kdc entry: "host", "host:port", "[v6]:port", optionally
// prefixed with "tcp/" or "udp/" as MIT krb5.conf allows. pref is the
// transport to use when the entry does not force one.
func ParseKDC(entry string, pref Transport) (KDC, error) {
	k := KDC{Entry: entry, Port: 88, Transport: pref}
	rest := strings.TrimSpace(entry)
	switch {
	case strings.HasPrefix(rest, "tcp/"):
		k.Transport, k.Forced, rest = TCP, true, rest[4:]
	case strings.HasPrefix(rest, "udp/"):
		k.Transport, k.Forced, rest = UDP, true, rest[4:]
	case strings.Contains(rest, "://"):
		return k, fmt.Errorf("kdc %q: HTTPS (MS-KKDCP) proxies are not supported", entry)
	}
	if rest == "" {
		return k, fmt.Errorf("kdc %q: empty host", entry)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		// No port: a bare host or a bracketed/bare IPv6 address.
		host = strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
	} else {
		p, perr := strconv.Atoi(port)
		if perr != nil || p < 1 || p > 65535 {
			return k, fmt.Errorf("kdc %q: bad port %q", entry, port)
		}
		k.Port = p
	}
	if host == "" {
		return k, fmt.Errorf("kdc %q: empty host", entry)
	}
	k.Host = host
	return k, nil
}

// PreferredTransport is the transport for a small request such as an AS-REQ
// under krb5.conf's udp_preference_limit (1 means always TCP).
func (c *Config) PreferredTransport() Transport {
	if c.LibDefaults.UDPPreferenceLimit == 1 {
		return TCP
	}
	return UDP
}

// ResolveKDCs lists the KDCs of realm in configured order: overrides
// (--kdc) if given, else the realm's kdc entries, else DNS SRV records when
// dns_lookup_kdc is on.
func (c *Config) ResolveKDCs(ctx context.Context, realm string, overrides []string) ([]KDC, error) {
	pref := c.PreferredTransport()
	entries := overrides
	if len(entries) == 0 {
		for _, r := range c.Realms {
			if r.Realm == realm {
				entries = append(entries, r.KDC...)
			}
		}
	}
	var kdcs []KDC
	for _, e := range entries {
		k, err := ParseKDC(e, pref)
		if err != nil {
			return nil, err
		}
		kdcs = append(kdcs, k)
	}
	if len(kdcs) == 0 && c.LibDefaults.DNSLookupKDC {
		srv, err := lookupSRV(ctx, realm, pref)
		if err != nil {
			return nil, err
		}
		kdcs = srv
	}
	if len(kdcs) == 0 {
		return nil, &ConfigError{Path: c.Path, Msg: fmt.Sprintf("no KDC for realm %s (no kdc entries under [realms] %s and dns_lookup_kdc is off)", realm, realm)}
	}
	return kdcs, nil
}

func lookupSRV(ctx context.Context, realm string, pref Transport) ([]KDC, error) {
	_, addrs, err := net.DefaultResolver.LookupSRV(ctx, "kerberos", string(pref), realm)
	if err != nil {
		return nil, fmt.Errorf("dns srv lookup of _kerberos._%s.%s: %w", pref, realm, err)
	}
	// LookupSRV already orders by priority and randomizes by weight; keep
	// that order so the report matches what a client would try.
	sort.SliceStable(addrs, func(i, j int) bool { return addrs[i].Priority < addrs[j].Priority })
	var kdcs []KDC
	for _, a := range addrs {
		host := strings.TrimSuffix(a.Target, ".")
		kdcs = append(kdcs, KDC{
			Entry:     net.JoinHostPort(host, strconv.Itoa(int(a.Port))),
			Host:      host,
			Port:      int(a.Port),
			Transport: pref,
		})
	}
	return kdcs, nil
}
