//go:build windows

package secretstore

// checkModes is off: Windows ignores Unix permission bits; ACLs protect
// the store there.
const checkModes = false
