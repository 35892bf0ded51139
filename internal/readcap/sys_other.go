//go:build !unix

package readcap

// oNonBlock: Windows has no FIFOs in the file system namespace.
const oNonBlock = 0
