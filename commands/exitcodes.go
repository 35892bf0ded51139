package commands

// exitStatusHelp is appended to every command's help: scripts branch on
// these codes, so they are part of the interface.
const exitStatusHelp = `

EXIT STATUS
  0    every check passed (warnings allowed unless --strict)
  1    a check failed (or warned, with --strict)
  2    usage or configuration error: bad flag, unreadable or malformed file;
       nothing was checked
  3    could not complete: a dependency (KDC, NTP, endpoint) did not answer
  130  interrupted by SIGINT or SIGTERM`
