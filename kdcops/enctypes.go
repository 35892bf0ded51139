package kdcops

import "strconv"

// enctypeNames are MIT's canonical names (what `klist -e` prints without
// its "DEPRECATED:" prefix), so a finding reads the same as the tools the
// on-call already knows.
var enctypeNames = map[int32]string{
	1:  "des-cbc-crc",
	2:  "des-cbc-md4",
	3:  "des-cbc-md5",
	4:  "des-cbc-raw",
	5:  "des3-cbc-md5",
	6:  "des3-cbc-raw",
	7:  "des3-cbc-sha1-old",
	8:  "des-hmac-sha1",
	16: "des3-cbc-sha1",
	17: "aes128-cts-hmac-sha1-96",
	18: "aes256-cts-hmac-sha1-96",
	19: "aes128-cts-hmac-sha256-128",
	20: "aes256-cts-hmac-sha384-192",
	23: "arcfour-hmac",
	24: "arcfour-hmac-exp",
	25: "camellia128-cts-cmac",
	26: "camellia256-cts-cmac",
}

// EnctypeName is the MIT name of an enctype number, or "enctype-N" for one
// MIT does not know.
func EnctypeName(e int32) string {
	if n, ok := enctypeNames[e]; ok {
		return n
	}
	return "enctype-" + strconv.Itoa(int(e))
}

// WeakEnctype reports whether e is deprecated: single DES and 3DES (RFC
// 6649, RFC 8429) and RC4/arcfour (RFC 8429). Unknown numbers are not
// called weak: krbops cannot say anything about them.
func WeakEnctype(e int32) bool {
	switch e {
	case 1, 2, 3, 4, 5, 6, 7, 8, 16, 23, 24:
		return true
	}
	return false
}

// AESEnctype reports whether e is one of the AES enctypes (RFC 3962, RFC
// 8009): the only ones every current Kerberos implementation (MIT,
// Heimdal, Active Directory, Java) supports and does not deprecate.
func AESEnctype(e int32) bool { return e >= 17 && e <= 20 }

// probeEnctypes are the strong enctypes krbops asks a KDC about even when
// the keytab has none of them, to find keys the keytab is missing.
var probeEnctypes = []int32{18, 17, 20, 19}
