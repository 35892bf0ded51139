//go:build unix

package secretstore

// checkModes applies on systems with Unix permission bits.
const checkModes = true
