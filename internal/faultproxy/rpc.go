package faultproxy

import "encoding/binary"

// RPCCall is the clear head of an ONC RPC call (RFC 5531 section 9). Under
// RPCSEC_GSS the arguments may be sealed, but these fields never are, so a
// rule can pick one procedure's exchanges from a kadmin session.
type RPCCall struct {
	XID  uint32
	Prog uint32
	Vers uint32
	Proc uint32
}

// ParseRPCCall reads the head of an RPC call from a record without its
// record marks, as [Rule.Match] receives it; false when msg is not a call.
func ParseRPCCall(msg []byte) (RPCCall, bool) {
	if len(msg) < 24 {
		return RPCCall{}, false
	}
	u := func(i int) uint32 { return binary.BigEndian.Uint32(msg[4*i:]) }
	if u(1) != 0 /* CALL */ || u(2) != 2 /* rpcvers */ {
		return RPCCall{}, false
	}
	return RPCCall{XID: u(0), Prog: u(3), Vers: u(4), Proc: u(5)}, true
}

// MatchRPCProc is a [Rule.Match] accepting calls to procedure proc of
// program prog, any version.
func MatchRPCProc(prog, proc uint32) func([]byte) bool {
	return func(msg []byte) bool {
		c, ok := ParseRPCCall(msg)
		return ok && c.Prog == prog && c.Proc == proc
	}
}

// MIT kadmind's RPC program and the procedures that change a principal's
// keys (MIT krb5 src/lib/kadm5/kadm_rpc.h). A kadmin session is NULLPROC
// (0) calls that set up and tear down the RPCSEC_GSS context, INIT, then
// the operation: `kadmin -q "cpw PRINC"` is 0, KadmInit, KadmChpass, 0 on
// one connection, and `cpw -randkey` uses KadmChrand3.
const (
	KadmProg     = 2112
	KadmInit     = 13
	KadmChpass   = 6
	KadmChrand   = 7
	KadmSetkey   = 16
	KadmChpass3  = 19
	KadmChrand3  = 20
	KadmSetkey3  = 21
	KadmSetkey4  = 25
	KadmGetPrinc = 5
	KadmNullProc = 0
)

// MatchKadminKeyChange is a [Rule.Match] accepting the kadmind calls that
// change a principal's keys (chpass, chrand, setkey, in all versions), so
// a fault hits the key change and not the session set-up around it.
func MatchKadminKeyChange(msg []byte) bool {
	c, ok := ParseRPCCall(msg)
	if !ok || c.Prog != KadmProg {
		return false
	}
	switch c.Proc {
	case KadmChpass, KadmChrand, KadmSetkey, KadmChpass3, KadmChrand3, KadmSetkey3, KadmSetkey4:
		return true
	}
	return false
}
