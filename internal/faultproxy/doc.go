// Package faultproxy is a test harness: a loopback proxy between a client
// and a real Kerberos-side server (a KDC, kadmind's kpasswd service, or
// kadmind itself) that forwards faithfully until told to break one
// exchange in a chosen way. It exists to prove that when the outcome of a
// key change is unknown to krbops (the request left, no answer came back),
// krbops finds out what the server did before doing anything else.
//
// # Where to start
//
// [Start] (or [ForTest] in a test) with [Options.Upstream] set to the real
// server's address; point the client at [Proxy.Addr]. Then choose a fault
// with [Proxy.Once] (the next n exchanges only, then faithful forwarding,
// so a resume goes through), [Proxy.Set] (every exchange until changed) or
// [Proxy.SetRule] (only exchanges whose request matches, e.g. kadmind's
// key-change call and not the RPCSEC_GSS set-up around it, with
// [MatchKadminKeyChange] or [MatchRPCProc]). Read the outcome with [Proxy.Stats] and
// [Proxy.Exchanges]; wait for the proxy to reach a state with [Proxy.Wait]
// (never sleep); end holds early with [Proxy.Release].
//
// # Exchanges and framing
//
// An exchange is one request from the client and the one reply to it. The
// proxy reads each request in full before it decides anything, so a fault
// never splits a request. The proxy listens on one loopback port for TCP
// and, with the [Kerberos] protocol, UDP too (the kpasswd and KDC ports
// serve both):
//
//   - UDP ([Kerberos] only): a request is one datagram; the next datagram
//     the server sends back to that client's proxy socket is its reply
//     (replies are matched to requests first in, first out per client
//     address; a reply with no request outstanding is forwarded and
//     counted in Replies and Delivered, but belongs to no exchange).
//   - TCP, [Kerberos]: RFC 4120 section 7.2.2 and RFC 3244 framing, a
//     4-byte big-endian length and then that many bytes, each way. Exact.
//   - TCP, [RPC]: ONC RPC record marking (RFC 5531 section 11): records of
//     fragments, each behind a 4-byte mark whose top bit flags the last
//     fragment. A request is one record; the reply is the next record from
//     the server. This assumes a strictly synchronous client (one call
//     outstanding per connection), which MIT kadmin is (gssrpc clnt_call);
//     RPCSEC_GSS context set-up calls are exchanges like any other.
//
// Bytes are forwarded exactly as read, framing included: the proxy never
// re-frames or re-fragments. A request cut short by the client, or over
// 16 MiB, ends the connection without an exchange. A TCP connection to the server is dialed when
// the first request of a client connection is forwarded and is used for all
// later exchanges of that client connection; it is closed when the client
// connection ends.
//
// # Faults at the byte level
//
// The fault of an exchange is fixed when its request has been read; a
// change of mode affects later exchanges only.
//
//   - [Forward]: request written to the server; the server's reply read in
//     full and written to the client.
//   - [DropReplyClose]: request forwarded; the server's reply read in full,
//     then the client connection is closed (FIN) with nothing written. The
//     client sees EOF. UDP: the reply datagram is swallowed.
//   - [DropReplyHang]: as DropReplyClose, but the client connection is held
//     open, silent, until the client closes it, [Proxy.Release] or
//     [Proxy.Close]. The client sees its own timeout. UDP: swallowed, like
//     DropReplyClose.
//   - [ResetMidReply]: request forwarded; the server's reply read in full;
//     the first [Fault.N] bytes of it (framing included: N < 4 cuts inside
//     the length prefix or record mark) are written to the client, then the
//     connection is reset (SO_LINGER 0 and close: an RST). N at or above
//     the reply's size delivers it all, then resets. UDP: a datagram of the
//     reply's first N bytes is sent (none when N is 0).
//   - [Delay]: the request (or, with [Fault.OnReply], the server's reply) is
//     held for [Fault.D] before it goes on; D <= 0 holds until Release or
//     Close. A held request is forwarded when the hold ends even if the
//     client has given up meanwhile, as late packets still arrive; Close
//     ends the hold without forwarding. A held TCP reply is not written if
//     the client closed its connection during the hold.
//   - [Refuse]: the request is read and not forwarded; the client
//     connection is reset at once. UDP: the datagram is dropped (a user
//     program cannot send the ICMP port-unreachable a real refusal is), so
//     Refuse is Blackhole there.
//   - [Blackhole]: the request is read and not forwarded; the connection is
//     held silent until the client closes it, Release or Close. UDP: the
//     datagram is dropped.
//
// Every fault but Forward and Delay ends the TCP connection (after any
// hold), so a client sees at most one fault per connection. "The client
// closes" means the proxy read EOF or an error from it; a client that
// half-closes after its request counts as gone during a hold.
//
// Which faults are exact for which service: for the KDC and kpasswd every
// exchange is one request and one reply on the wire, so a fault hits
// exactly the exchange chosen. For kadmind ([RPC]) faults are per call, not
// per connection; a rule without Match also hits the RPCSEC_GSS set-up
// calls, so pick the key change with [MatchKadminKeyChange].
//
// # Counters
//
// [Stats] counts are exact and monotonic, and each exchange adds at most one
// to each of Requests, Forwarded, Replies, Delivered, Faulted and Done:
//
//   - Requests: exchanges begun, i.e. complete requests read from clients.
//     A partial request (client gone mid-message) is not counted.
//   - Forwarded: requests written in full to the server's socket. A TCP
//     request counted here reached the server unless the server itself
//     failed; Refuse and Blackhole never add to it, a Delay does only once
//     its hold ends.
//   - Replies: complete replies read from the server.
//   - Delivered: replies written in full to the client's socket. A reply
//     written to a TCP client that closed a moment before may count here
//     although nobody read it; ResetMidReply never counts, even with N at
//     or above the reply's size.
//   - Faulted: exchanges whose fault was not Forward.
//   - Done: exchanges finished, whatever the outcome; an exchange still in a
//     hold, or waiting for the server, is not done.
//
// Forwarded and Replies are updated before the exchange can be Done, so
// Wait(ctx, func(s Stats) bool { return s.Done == 1 }) followed by a read of
// them is race-free. Over TCP, an exchange ended by DropReplyClose,
// ResetMidReply or Refuse is Done before the client can see the close or
// reset, so a test may read Stats as soon as its client has failed. A
// delivered reply may reach the client a moment before the exchange counts
// as Done, and an exchange in a hold ends only when the hold does: Wait
// for those.
package faultproxy
