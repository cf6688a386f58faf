// Package ledgerclient talks to the grid ledger's chain API (package
// ledgerapi, served by `zos chain run`) over HTTP: it reads twins, nodes
// and contracts as the ledger's own views, and submits signed
// transactions. The CLI and the nodes' ledger watchers use it; it imports
// no consensus engine, so a node reads the ledger without carrying
// CometBFT. docs/LEDGER.md, "Chain API", is the reference.
//
// # Wire
//
// Every answer is JSON. Objects are the ledger's views (ledger.TwinView,
// ledger.NodeView, ledger.ContractView) byte for byte as the validators
// agreed on them; lists are JSON arrays, and a full page carries a Link
// header with rel="next" that the list methods follow. Errors are an
// ErrorBody with the HTTP status: 404 for something the ledger does not
// hold (the error wraps ledger.ErrNotFound), 400 for a bad parameter
// (ledger.ErrInvalid), 422 for a refused transaction, 504 when a
// transaction did not commit within the server's wait.
//
// # Reads
//
// Reads are idempotent, so a read that meets a connection error or a 5xx
// is tried again with backoff, a few times, within the caller's context.
//
// # Submit
//
// Submit posts one signed transaction and waits for its block. A
// transaction is never posted again blindly: after a failure that leaves
// its fate unknown (a connection cut, a 5xx, the server's 504) Submit
// looks it up by hash (SHA-256 of its bytes, as CometBFT names it) until
// it shows up or the context ends. Posting the same bytes again is safe
// only because the ledger's nonces make a transaction count once; Submit
// does it, after lookups found nothing, only when the server may never
// have seen it, and reads a "stale nonce" answer to such a resend by
// looking the hash up once more. A transaction the ledger refuses, at
// CheckTx or in its block, is a *RefusedError with the ledger's result
// code (errors.Is ErrRefused, and the ledger's sentinel for the code).
package ledgerclient
