package lab

import (
	"context"
	"crypto/rand"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// ProbePrincipal is the client name the harness puts in its AS-REQ probes. It
// never exists in a lab realm, so a KDC answers with
// KDC_ERR_C_PRINCIPAL_UNKNOWN and its own clock.
const ProbePrincipal = "krbops-lab-probe"

// Reply is what a KDC answered to a probe AS-REQ.
type Reply struct {
	// ErrorCode is the KRB-ERROR error-code (6 = KDC_ERR_C_PRINCIPAL_UNKNOWN,
	// 25 = KDC_ERR_PREAUTH_REQUIRED, ...); 0 when the KDC sent an AS-REP.
	ErrorCode int
	// EText is the KRB-ERROR e-text, if any.
	EText string
	// STime is the KDC's clock (stime+susec of the KRB-ERROR). Zero for an
	// AS-REP, whose times are encrypted.
	STime time.Time
	// Sent and Received bracket the exchange on the local clock.
	Sent, Received time.Time
}

// Offset is how far the KDC's clock is ahead of the local one (negative:
// behind), measured against the midpoint of the exchange.
func (r Reply) Offset() time.Duration {
	if r.STime.IsZero() {
		return 0
	}
	mid := r.Sent.Add(r.Received.Sub(r.Sent) / 2)
	return r.STime.Sub(mid)
}

// Probe sends one AS-REQ for client (ProbePrincipal when empty; "a/b" is a
// two-component name, an "@REALM" suffix is ignored) in realm to
// the KDC at addr over network ("udp" or "tcp") without pre-authentication
// and decodes the answer. It is written with the standard library only, so
// the harness does not depend on the Kerberos client under test.
func Probe(ctx context.Context, network, addr, realm, client string) (Reply, error) {
	if client == "" {
		client = ProbePrincipal
	}
	req, err := buildASReq(realm, client)
	if err != nil {
		return Reply{}, err
	}
	conn, done, err := dialProbe(ctx, network, addr)
	if err != nil {
		return Reply{}, err
	}
	defer done()

	rep := Reply{Sent: time.Now()}
	msg, err := exchange(conn, network, req)
	if err != nil {
		return Reply{}, err
	}
	rep.Received = time.Now()
	if err := parseReply(msg, &rep); err != nil {
		return Reply{}, fmt.Errorf("lab: KDC %s/%s: %w", network, addr, err)
	}
	return rep, nil
}

// KDCTime returns the clock of the KDC at addr (asked over UDP) and its
// offset from the local clock.
func KDCTime(ctx context.Context, addr, realm string) (time.Time, time.Duration, error) {
	rep, err := Probe(ctx, "udp", addr, realm, "")
	if err != nil {
		return time.Time{}, 0, err
	}
	if rep.STime.IsZero() {
		return time.Time{}, 0, fmt.Errorf("lab: KDC %s answered the probe without a KRB-ERROR", addr)
	}
	return rep.STime, rep.Offset(), nil
}

// ProbeKpasswd sends the kpasswd server at addr, over network ("udp" or
// "tcp"), one RFC 3244 request around an AP-REQ it cannot decode, and
// returns nil once a kpasswd reply (holding a KRB-ERROR) comes back: the
// server is up on that transport. The lab waits for Heimdal's kpasswdd
// this way, which has no TCP listener to dial.
func ProbeKpasswd(ctx context.Context, network, addr string) error {
	c, done, err := dialProbe(ctx, network, addr)
	if err != nil {
		return err
	}
	defer done()

	apReq := tlv(0x6e, derInt(0)) // [APPLICATION 14] that is no AP-REQ
	krbPriv := tlv(0x75)          // [APPLICATION 21], empty
	req := binary.BigEndian.AppendUint16(nil, uint16(6+len(apReq)+len(krbPriv)))
	req = binary.BigEndian.AppendUint16(req, 1) // protocol version 1
	req = binary.BigEndian.AppendUint16(req, uint16(len(apReq)))
	req = append(append(req, apReq...), krbPriv...)

	msg, err := exchange(c, network, req)
	if err != nil {
		return err
	}
	// A reply starts with its own length, then a version and the length
	// of an AP-REP (0 when a KRB-ERROR follows).
	if len(msg) < 6 || int(binary.BigEndian.Uint16(msg)) != len(msg) {
		return fmt.Errorf("lab: kpasswd %s/%s: a %d-byte answer that is no kpasswd reply", network, addr, len(msg))
	}
	return nil
}

// dialProbe connects for one probe exchange, which ends when ctx does and
// after 3 s at most; done closes the connection.
func dialProbe(ctx context.Context, network, addr string) (conn net.Conn, done func(), err error) {
	var d net.Dialer
	conn, err = d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 3*time.Second {
		deadline = time.Now().Add(3 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return conn, func() { stop(); conn.Close() }, nil
}

// exchange sends req over conn and returns the answer: one datagram over
// UDP; over TCP, both framed by a 4-byte length (RFC 4120 7.2.2, RFC 3244).
func exchange(conn net.Conn, network string, req []byte) ([]byte, error) {
	switch network {
	case "udp", "udp4", "udp6":
		if _, err := conn.Write(req); err != nil {
			return nil, err
		}
		buf := make([]byte, 65536)
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	case "tcp", "tcp4", "tcp6":
		framed := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
		if _, err := conn.Write(append(framed, req...)); err != nil {
			return nil, err
		}
		var hdr [4]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > 1<<20 {
			return nil, fmt.Errorf("lab: %s sent a %d-byte TCP frame", conn.RemoteAddr(), n)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(conn, msg); err != nil {
			return nil, err
		}
		return msg, nil
	}
	return nil, fmt.Errorf("lab: unsupported network %q", network)
}

// --- minimal DER, enough for an AS-REQ (RFC 4120 section 5.4.1) ---

func derLen(n int) []byte {
	if n < 0x80 {
		return []byte{byte(n)}
	}
	var b []byte
	for v := n; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return append([]byte{0x80 | byte(len(b))}, b...)
}

func tlv(tag byte, parts ...[]byte) []byte {
	var content []byte
	for _, p := range parts {
		content = append(content, p...)
	}
	out := append([]byte{tag}, derLen(len(content))...)
	return append(out, content...)
}

func ctxTag(n int, inner []byte) []byte { return tlv(0xA0|byte(n), inner) }

func derInt(v int64) []byte {
	b, _ := asn1.Marshal(v) // cannot fail for an int64
	return b
}

func generalString(s string) []byte { return tlv(0x1B, []byte(s)) }

func kerberosTime(t time.Time) []byte {
	return tlv(0x18, []byte(t.UTC().Format("20060102150405Z")))
}

func principalName(nameType int64, parts ...string) []byte {
	var strs [][]byte
	for _, p := range parts {
		strs = append(strs, generalString(p))
	}
	return tlv(0x30, ctxTag(0, derInt(nameType)), ctxTag(1, tlv(0x30, strs...)))
}

func buildASReq(realm, client string) ([]byte, error) {
	var nb [4]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, err
	}
	nonce := int64(binary.BigEndian.Uint32(nb[:]) & 0x7fffffff)
	// "host/x.example@REALM" -> components "host", "x.example".
	if i := strings.LastIndexByte(client, '@'); i >= 0 {
		client = client[:i]
	}
	clientParts := strings.Split(client, "/")
	body := tlv(0x30,
		ctxTag(0, tlv(0x03, []byte{0, 0, 0, 0, 0})), // kdc-options: none
		ctxTag(1, principalName(1, clientParts...)), // NT-PRINCIPAL
		ctxTag(2, generalString(realm)),
		ctxTag(3, principalName(2, "krbtgt", realm)), // NT-SRV-INST
		ctxTag(5, kerberosTime(time.Now().Add(10*time.Hour))),
		ctxTag(7, derInt(nonce)),
		ctxTag(8, tlv(0x30, derInt(18), derInt(17))), // aes256/aes128-cts-hmac-sha1-96
	)
	kdcReq := tlv(0x30,
		ctxTag(1, derInt(5)),  // pvno
		ctxTag(2, derInt(10)), // msg-type AS-REQ
		ctxTag(4, body),
	)
	return tlv(0x6A, kdcReq), nil // [APPLICATION 10]
}

func parseReply(msg []byte, rep *Reply) error {
	var app asn1.RawValue
	if _, err := asn1.Unmarshal(msg, &app); err != nil {
		return fmt.Errorf("undecodable reply: %w", err)
	}
	if app.Class != asn1.ClassApplication {
		return fmt.Errorf("reply is not a Kerberos message (class %d tag %d)", app.Class, app.Tag)
	}
	switch app.Tag {
	case 11: // AS-REP
		return nil
	case 30: // KRB-ERROR
	default:
		return fmt.Errorf("unexpected Kerberos message [APPLICATION %d]", app.Tag)
	}
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(app.Bytes, &seq); err != nil {
		return fmt.Errorf("KRB-ERROR: %w", err)
	}
	var stime time.Time
	var susec int
	rest := seq.Bytes
	for len(rest) > 0 {
		var f asn1.RawValue
		var err error
		rest, err = asn1.Unmarshal(rest, &f)
		if err != nil {
			return fmt.Errorf("KRB-ERROR field: %w", err)
		}
		if f.Class != asn1.ClassContextSpecific {
			continue
		}
		switch f.Tag {
		case 4:
			var inner asn1.RawValue
			if _, err := asn1.Unmarshal(f.Bytes, &inner); err != nil {
				return fmt.Errorf("KRB-ERROR stime: %w", err)
			}
			t, err := time.Parse("20060102150405Z", string(inner.Bytes))
			if err != nil {
				return fmt.Errorf("KRB-ERROR stime: %w", err)
			}
			stime = t
		case 5:
			if _, err := asn1.Unmarshal(f.Bytes, &susec); err != nil {
				return fmt.Errorf("KRB-ERROR susec: %w", err)
			}
		case 6:
			if _, err := asn1.Unmarshal(f.Bytes, &rep.ErrorCode); err != nil {
				return fmt.Errorf("KRB-ERROR error-code: %w", err)
			}
		case 11:
			var inner asn1.RawValue
			if _, err := asn1.Unmarshal(f.Bytes, &inner); err == nil {
				rep.EText = string(inner.Bytes)
			}
		}
	}
	if stime.IsZero() {
		return errors.New("KRB-ERROR without stime")
	}
	rep.STime = stime.Add(time.Duration(susec) * time.Microsecond)
	return nil
}
