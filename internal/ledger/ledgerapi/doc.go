// Package ledgerapi serves the grid ledger over HTTP: a JSON API to read
// twins, nodes and contracts and to submit signed transactions, and a web
// page that lists them. It stands in front of one running validator (a
// Chain: *engine.Node) and adds no state of its own: every answer is read
// from the validator's committed ledger when it is asked for. Package
// ledgerclient is its client and holds the wire types; docs/LEDGER.md,
// "Chain API", is the reference.
//
// # Reads
//
// GET /v1/info, /v1/twins, /v1/twins/{id}, /v1/nodes, /v1/nodes/{id},
// /v1/contracts, /v1/contracts/{id}, /v1/tx/{hash}. Objects are the
// ledger's views exactly as its queries return them, so a node that reads
// a contract here decodes what the validators agreed on and verifies its
// approvals itself (ledger.ContractView.Verify). Lists page by id: after
// and limit, and a full page links the next one (Link: <...>; rel="next").
// Parameters are checked strictly: an unknown one, a malformed number or
// a limit out of range is a 400, so a misspelt filter never silently
// answers "everything".
//
// # Submit
//
// POST /v1/tx takes one signed transaction (at most ledger.MaxTx bytes),
// broadcasts it and waits until its block commits, at most
// Options.CommitWait: 200 with its result when applied, 422 with the
// ledger's code and log when refused (at CheckTx, or in its block), 504
// with its hash when the wait ran out, so that the client looks it up
// instead of posting it again.
//
// # Page
//
// GET / lists the chain's twins, nodes and contracts; /contracts/{id}
// shows one contract with its requirement and approvals. The pages are
// rendered on the server with html/template (everything from the ledger
// is escaped: endpoints, report details and specs are written by
// strangers) and carry a Content-Security-Policy that allows no script:
// they need none.
package ledgerapi
