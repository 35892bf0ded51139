package kdcops

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jcmturner/gokrb5/v8/types"
)

// CCacheCred is one credential MarshalCCache writes: a ticket, its
// session key and what the KDC said about it (the EncKDCRepPart).
type CCacheCred struct {
	Client      types.PrincipalName
	ClientRealm string
	Server      types.PrincipalName
	ServerRealm string
	Key         types.EncryptionKey
	AuthTime    time.Time
	StartTime   time.Time
	EndTime     time.Time
	RenewTill   time.Time
	Flags       uint32 // the TicketFlags bits as MIT stores them (FlagRenewable ...)
	Addresses   []types.HostAddress
	Ticket      []byte // the Ticket's DER encoding
}

// TicketFlagsWord turns the KDC's TicketFlags bit string into the 32-bit
// word a ccache stores (bit 0 of the ASN.1 string is the high bit).
func TicketFlagsWord(b []byte) uint32 {
	var w [4]byte
	copy(w[:], b)
	return binary.BigEndian.Uint32(w[:])
}

// MarshalCCache returns a FILE: credential cache, version 4 (the format
// MIT writes, which MIT klist and kvno and gokrb5's LoadCCache read), for
// the default principal and creds. The bytes hold session keys: write
// them with mode 0600 only.
func MarshalCCache(principal types.PrincipalName, realm string, creds []CCacheCred) ([]byte, error) {
	w := &ccWriter{}
	w.u16(0x0504)
	w.u16(0) // no header fields: the KDC time offset is left to libkrb5
	w.principal(principal, realm)
	for i, c := range creds {
		if len(c.Key.KeyValue) > 0xffff || c.Key.KeyType < 0 || c.Key.KeyType > 0xffff {
			return nil, fmt.Errorf("credential %d: session key of enctype %d does not fit a ccache", i+1, c.Key.KeyType)
		}
		w.principal(c.Client, c.ClientRealm)
		w.principal(c.Server, c.ServerRealm)
		w.u16(uint16(c.Key.KeyType))
		w.data(c.Key.KeyValue)
		for _, t := range []time.Time{c.AuthTime, c.StartTime, c.EndTime, c.RenewTill} {
			w.time(t)
		}
		w.b = append(w.b, 0) // is_skey
		w.u32(c.Flags)
		w.u32(uint32(len(c.Addresses)))
		for _, a := range c.Addresses {
			w.u16(uint16(a.AddrType))
			w.data(a.Address)
		}
		w.u32(0) // no authdata
		w.data(c.Ticket)
		w.data(nil) // no second ticket
	}
	return w.b, nil
}

type ccWriter struct{ b []byte }

func (w *ccWriter) u16(v uint16) { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *ccWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *ccWriter) data(d []byte) {
	w.u32(uint32(len(d)))
	w.b = append(w.b, d...)
}

func (w *ccWriter) time(t time.Time) {
	if t.IsZero() {
		w.u32(0)
		return
	}
	w.u32(uint32(t.Unix()))
}

func (w *ccWriter) principal(p types.PrincipalName, realm string) {
	w.u32(uint32(p.NameType))
	w.u32(uint32(len(p.NameString)))
	w.data([]byte(realm))
	for _, c := range p.NameString {
		w.data([]byte(c))
	}
}
