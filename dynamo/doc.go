// Package dynamo runs a DynamoDB Query or parallel Scan that survives
// Kerberos ticket and AWS credential expiry and resumes exactly once at
// page boundaries. Start with [Prepare]: it describes the table, loads or
// creates the checkpoint, refuses a checkpoint written for another run
// ([BindingError]) and measures one page. [Plan.Run] then reads every
// segment with its workers and commits each page as a unit (append the
// items to the output, fsync, replace the checkpoint atomically).
//
// Errors are sorted into the classes of DESIGN.md ([Classify]):
// authentication failures refresh the worker's ticket and credentials and
// resend the same page once; permission failures stop the run at once;
// transient failures back off with full jitter within a retry budget
// shared by all workers.
//
// The package never prints. It returns results and typed errors, and logs
// every ticket request, credential fetch and AWS error to the forensic
// logger it is given. It never logs keys, secret access keys, session
// tokens or a credential broker's reply.
package dynamo
