package kdcops

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/krbops/krbops/internal/readcap"
)

// The MIT FILE: credential cache format
// (https://web.mit.edu/kerberos/krb5-latest/doc/formats/ccache_file_format.html):
//
//	0x05 version (1-4); versions 1 and 2 use native byte order
//	version 4: uint16 header length, then tag/length/value fields
//	           (tag 1: the KDC time offset, int32 seconds + int32 usec)
//	default principal
//	credentials until the end of the file: client, server, keyblock
//	(version 3 repeats the enctype), authtime, starttime, endtime,
//	renew-till, is_skey, ticket flags, addresses, authdata, ticket,
//	second ticket
//
// krbops parses caches itself: gokrb5's parser panics on truncated input
// (DESIGN.md) and cannot say where the problem is.

// Ticket flags as MIT stores them in a ccache (krb5.h TKT_FLG_*).
const (
	FlagForwardable uint32 = 0x40000000
	FlagPostdated   uint32 = 0x02000000
	FlagInvalid     uint32 = 0x01000000
	FlagRenewable   uint32 = 0x00800000
	FlagInitial     uint32 = 0x00400000
	FlagPreAuth     uint32 = 0x00200000
)

// ccacheConfRealm marks configuration entries (fast_avail, pa_type,
// start_realm, ...) that MIT stores as fake credentials.
const ccacheConfRealm = "X-CACHECONF:"

// CCache is a parsed FILE: credential cache. Session keys and tickets are
// not kept, except those of the primary TGT when read with KeepTGT (for
// --online, which asks the KDC for tickets with it).
type CCache struct {
	Version      int
	HasKDCOffset bool
	KDCOffset    time.Duration // KDC time minus local time, as libkrb5 recorded it (version 4)
	Principal    string        // default principal, name@REALM
	Components   []string      // of the default principal
	Realm        string
	Creds        []Cred // real credentials; configuration entries are left out
	ConfigCount  int    // configuration entries seen
}

// Cred is one ticket of a cache.
type Cred struct {
	Client           string
	Server           string
	ServerComponents []string
	ServerRealm      string
	SessionEnctype   int32
	AuthTime         time.Time
	StartTime        time.Time // zero when the ticket starts at AuthTime
	EndTime          time.Time
	RenewTill        time.Time // zero when not renewable
	Flags            uint32
	Offset           int64 // byte offset of the credential in the file

	ticket     []byte
	sessionKey []byte
}

// Start is when the ticket becomes valid: StartTime, or AuthTime when the
// KDC left starttime out.
func (c Cred) Start() time.Time {
	if !c.StartTime.IsZero() {
		return c.StartTime
	}
	return c.AuthTime
}

// IsTGT reports whether the ticket is a ticket-granting ticket
// (krbtgt/REALM@REALM), for any realm.
func (c Cred) IsTGT() bool {
	return len(c.ServerComponents) == 2 && c.ServerComponents[0] == "krbtgt"
}

// TGT returns the cache's primary TGT: krbtgt/R@R for the default
// principal's realm R.
func (c *CCache) TGT() (Cred, bool) {
	for _, cr := range c.Creds {
		if cr.IsTGT() && cr.ServerComponents[1] == c.Realm && cr.ServerRealm == c.Realm {
			return cr, true
		}
	}
	return Cred{}, false
}

// CCacheOptions tune parsing.
type CCacheOptions struct {
	KeepTGT bool // keep the primary TGT's ticket and session key
}

// ParseCCache parses a cache held in memory. It never panics, whatever data
// holds (see FuzzParseCCache); problems are *FormatError with an offset.
func ParseCCache(data []byte, o CCacheOptions) (*CCache, error) {
	p := ccParser{b: data}
	cc := &CCache{}
	if len(data) == 0 {
		return nil, &FormatError{Offset: 0, Msg: "empty file, no credential cache header"}
	}
	if data[0] != 0x05 {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("first byte is 0x%02x, not 0x05: not a credential cache", data[0])}
	}
	if len(data) < 2 {
		return nil, &FormatError{Offset: 0, Msg: "file is 1 byte, shorter than the 2-byte header"}
	}
	cc.Version = int(data[1])
	switch cc.Version {
	case 1, 2:
		p.order = binary.NativeEndian
	case 3, 4:
		p.order = binary.BigEndian
	default:
		return nil, &FormatError{Offset: 1, Msg: fmt.Sprintf("credential cache version 0x%02x is not 1 to 4", data[1])}
	}
	p.pos = 2
	if cc.Version == 4 {
		if err := p.header(cc); err != nil {
			return nil, err
		}
	}
	comps, realm, err := p.principal(cc.Version, "default principal")
	if err != nil {
		return nil, err
	}
	cc.Principal, cc.Components, cc.Realm = unparsePrincipal(comps, realm), comps, realm
	for p.pos < len(p.b) {
		cr, conf, err := p.cred(cc.Version)
		if err != nil {
			return cc, err
		}
		if conf {
			cc.ConfigCount++
			continue
		}
		// Key material is kept (copied, so the file's buffer is not
		// pinned) only for the one ticket --online may use.
		if o.KeepTGT && cr.IsTGT() && cr.ServerComponents[1] == cc.Realm && cr.ServerRealm == cc.Realm {
			cr.ticket = append([]byte(nil), cr.ticket...)
			cr.sessionKey = append([]byte(nil), cr.sessionKey...)
		} else {
			cr.ticket, cr.sessionKey = nil, nil
		}
		cc.Creds = append(cc.Creds, cr)
	}
	return cc, nil
}

// ReadCCacheFile reads the cache at path (a bare path; see CCachePath for
// FILE: names). Errors are *FileError.
func ReadCCacheFile(path string, o CCacheOptions) (*CCache, error) {
	data, err := readcap.ReadFile(path, maxKeytabFile)
	if err != nil {
		return nil, &FileError{Kind: "credential cache", Path: path, Err: err}
	}
	cc, err := ParseCCache(data, o)
	if err != nil {
		return cc, &FileError{Kind: "credential cache", Path: path, Err: err}
	}
	return cc, nil
}

type ccParser struct {
	b     []byte
	pos   int
	order binary.ByteOrder
}

func (p *ccParser) fail(at int, format string, a ...any) error {
	return &FormatError{Offset: int64(at), Msg: fmt.Sprintf(format, a...)}
}

func (p *ccParser) take(n int, what string) ([]byte, error) {
	if n < 0 || n > len(p.b)-p.pos {
		return nil, p.fail(p.pos, "%s needs %d bytes but the file ends at byte %d", what, n, len(p.b))
	}
	b := p.b[p.pos : p.pos+n]
	p.pos += n
	return b, nil
}

func (p *ccParser) u8(what string) (uint8, error) {
	b, err := p.take(1, what)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (p *ccParser) u16(what string) (uint16, error) {
	b, err := p.take(2, what)
	if err != nil {
		return 0, err
	}
	return p.order.Uint16(b), nil
}

func (p *ccParser) u32(what string) (uint32, error) {
	b, err := p.take(4, what)
	if err != nil {
		return 0, err
	}
	return p.order.Uint32(b), nil
}

// data reads a uint32-counted octet string.
func (p *ccParser) data(what string) ([]byte, error) {
	at := p.pos
	n, err := p.u32(what + " length")
	if err != nil {
		return nil, err
	}
	if int64(n) > int64(len(p.b)-p.pos) {
		return nil, p.fail(at, "%s length %d runs past the end of the file at byte %d", what, n, len(p.b))
	}
	return p.take(int(n), what)
}

// count reads a uint32 element count and checks that minSize bytes per
// element fit in what is left, so a corrupt count cannot drive a huge
// allocation or a long loop.
func (p *ccParser) count(what string, minSize int) (int, error) {
	at := p.pos
	n, err := p.u32(what)
	if err != nil {
		return 0, err
	}
	if int64(n)*int64(minSize) > int64(len(p.b)-p.pos) {
		return 0, p.fail(at, "%s %d does not fit in the %d bytes left", what, n, len(p.b)-p.pos)
	}
	return int(n), nil
}

func (p *ccParser) time(what string) (time.Time, error) {
	v, err := p.u32(what)
	if err != nil || v == 0 {
		return time.Time{}, err
	}
	return time.Unix(int64(v), 0).UTC(), nil
}

func (p *ccParser) header(cc *CCache) error {
	at := p.pos
	n, err := p.u16("header length")
	if err != nil {
		return err
	}
	if int(n) > len(p.b)-p.pos {
		return p.fail(at, "header length %d runs past the end of the file at byte %d", n, len(p.b))
	}
	end := p.pos + int(n)
	for p.pos < end {
		fieldAt := p.pos
		if end-p.pos < 4 {
			return p.fail(fieldAt, "header field needs 4 bytes but the header ends at byte %d", end)
		}
		tag, _ := p.u16("header tag")
		l, _ := p.u16("header field length")
		if int(l) > end-p.pos {
			return p.fail(fieldAt, "header field %d of %d bytes runs past the end of the header at byte %d", tag, l, end)
		}
		v, _ := p.take(int(l), "header field")
		if tag == 1 { // the KDC time offset
			if l != 8 {
				return p.fail(fieldAt, "KDC time offset field is %d bytes, not 8", l)
			}
			sec := int32(p.order.Uint32(v[:4]))
			usec := int32(p.order.Uint32(v[4:]))
			cc.HasKDCOffset = true
			cc.KDCOffset = time.Duration(sec)*time.Second + time.Duration(usec)*time.Microsecond
		}
		// Other tags are skipped, as MIT does.
	}
	return nil
}

func (p *ccParser) principal(version int, what string) (comps []string, realm string, err error) {
	if version != 1 {
		if _, err := p.u32(what + " name type"); err != nil {
			return nil, "", err
		}
	}
	at := p.pos
	n, err := p.count(what+" component count", 4)
	if err != nil {
		return nil, "", err
	}
	if version == 1 {
		n-- // version 1 counts the realm as a component
	}
	if n < 0 {
		return nil, "", p.fail(at, "%s has no realm", what)
	}
	r, err := p.data(what + " realm")
	if err != nil {
		return nil, "", err
	}
	comps = make([]string, n)
	for i := range comps {
		c, err := p.data(fmt.Sprintf("%s component %d", what, i+1))
		if err != nil {
			return nil, "", err
		}
		comps[i] = string(c)
	}
	return comps, string(r), nil
}

func (p *ccParser) cred(version int) (cr Cred, conf bool, err error) {
	cr.Offset = int64(p.pos)
	cc, crealm, err := p.principal(version, "client")
	if err != nil {
		return cr, false, err
	}
	cr.Client = unparsePrincipal(cc, crealm)
	sc, srealm, err := p.principal(version, "server")
	if err != nil {
		return cr, false, err
	}
	cr.ServerComponents, cr.ServerRealm = sc, srealm
	cr.Server = unparsePrincipal(sc, srealm)
	et, err := p.u16("session key enctype")
	if err != nil {
		return cr, false, err
	}
	if version == 3 {
		// Version 3 writes the enctype twice; the second is the one used.
		if et, err = p.u16("session key enctype"); err != nil {
			return cr, false, err
		}
	}
	cr.SessionEnctype = int32(int16(et))
	key, err := p.data("session key")
	if err != nil {
		return cr, false, err
	}
	if cr.AuthTime, err = p.time("authtime"); err != nil {
		return cr, false, err
	}
	if cr.StartTime, err = p.time("starttime"); err != nil {
		return cr, false, err
	}
	if cr.EndTime, err = p.time("endtime"); err != nil {
		return cr, false, err
	}
	if cr.RenewTill, err = p.time("renew-till"); err != nil {
		return cr, false, err
	}
	if _, err = p.u8("is_skey"); err != nil {
		return cr, false, err
	}
	if cr.Flags, err = p.u32("ticket flags"); err != nil {
		return cr, false, err
	}
	naddr, err := p.count("address count", 6)
	if err != nil {
		return cr, false, err
	}
	for i := 0; i < naddr; i++ {
		if _, err := p.u16("address type"); err != nil {
			return cr, false, err
		}
		if _, err := p.data("address"); err != nil {
			return cr, false, err
		}
	}
	nad, err := p.count("authdata count", 6)
	if err != nil {
		return cr, false, err
	}
	for i := 0; i < nad; i++ {
		if _, err := p.u16("authdata type"); err != nil {
			return cr, false, err
		}
		if _, err := p.data("authdata"); err != nil {
			return cr, false, err
		}
	}
	ticket, err := p.data("ticket")
	if err != nil {
		return cr, false, err
	}
	if _, err := p.data("second ticket"); err != nil {
		return cr, false, err
	}
	if srealm == ccacheConfRealm {
		return cr, true, nil
	}
	cr.ticket, cr.sessionKey = ticket, key
	return cr, false, nil
}
