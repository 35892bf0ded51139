//go:build unix

package readcap

import "syscall"

// oNonBlock keeps an open of a FIFO from waiting for a writer; the type
// check then refuses it before anything is read.
const oNonBlock = syscall.O_NONBLOCK
