// Package engine runs the grid ledger's state machine (a ledger.Machine)
// under CometBFT v1, in-process: the consensus engine, its stores and its
// peer-to-peer network live in the zos process, and the Machine is called
// directly, not over an ABCI socket.
//
// # Engine
//
// A validator's home directory holds CometBFT's usual layout:
// config/config.toml, config/genesis.json, config/node_key.json (its
// peer-to-peer identity), config/priv_validator_key.json (its signing key),
// data/priv_validator_state.json (the last height, round and step it
// signed, so that it never signs twice) and data/ (the stores: blocks,
// state, transaction index, evidence, and the consensus write-ahead log).
// Init writes them for one validator, InitTestnet for several on one host;
// both only ever add what is missing. config.toml is CometBFT's own file:
// an operator tunes or opens a validator by editing it as for any CometBFT
// node, and Start reads it the way the cometbft command does.
//
// Start runs the validator; its Node is the door to it: Broadcast submits a
// transaction and waits until it commits, Query reads the committed state,
// WaitHeight waits for a block, Status tells where the chain stands, Tx finds
// a committed transaction by hash. Stop ends every goroutine the engine
// owns and closes the stores, so that the same directory starts again in
// the same process (see the known limits below).
//
// The adapter between CometBFT and the Machine is small on purpose:
// InitChain hands the genesis chain id to a Machine that implements
// ChainIniter (ledger.App does), CheckTx refusals get the ledger's result
// code (ledger.Code: CodeRefused for an error without one) with the
// Machine's error as log, a FinalizeBlock result keeps the Machine's own
// code, each ledger.Event becomes an ABCI event of its type with an
// indexed "id" attribute, and a query for something absent gets
// CodeNotFound, so that a remote client tells "absent" from "broken".
// Commit never asks CometBFT to prune (RetainHeight 0): the blocks are the
// ledger's audit trail and what a wiped node replays.
//
// # Validators
//
// Validators are fixed in genesis.json, all with the same power: any group
// holding more than 2/3 of them by count commits blocks, so 4 validators
// survive one stopped or faulty validator, 7 survive two. The Machine does
// not change the validator set (InitChain and FinalizeBlock return no
// validator updates). A transaction is judged twice: by CheckTx, on the
// validator it is submitted to and on every validator its mempool gossips
// it to, which keeps refused transactions out of blocks; and by
// FinalizeBlock on every validator, which is the judgement that counts. A
// faulty proposer can put a transaction in a block that no CheckTx
// admitted; every honest validator then records the same refusal code for
// it, because the Machine is deterministic, and nothing changes.
//
// Testnet validators listen on loopback ports the kernel picks, with
// p2p.addr_book_strict off and p2p.allow_duplicate_ip on (CometBFT refuses
// peers on loopback or sharing an IP by default) and every other validator
// as a persistent peer.
//
// # Blocks
//
// Timing sets the pace: BlockTime (consensus.timeout_commit; CometBFT v1.0
// has no next_block_delay yet) is the pause after a commit, so a busy chain
// makes a block per BlockTime plus the time votes take to travel, and
// RoundTimeout is how long validators wait for a proposer that may be down.
// The defaults (500 ms and 1 s) suit validators on one machine or a LAN;
// tests use 100 ms and 400 ms.
//
// An idle chain makes an empty block only every EmptyBlockInterval (30 s
// by default), not on every BlockTime. Transactions start a block at once,
// so an idle chain costs no latency, and its height stays meaningful (a
// watcher that wakes per block is not woken ten times a second for
// nothing); but the chain still shows it is alive and its block time moves
// on, which a watcher needs to tell "nothing happened" from "the ledger is
// stuck", and which time-based rules (a contract that expires) need. After
// a block with transactions CometBFT makes one more, possibly empty, so
// that the new app hash is signed in a header.
//
// That rule is about the app hash, not the transactions: CometBFT makes
// the next block at once after any block that changed it. So an idle chain
// idles only over a Machine whose app hash stays the same through an
// empty block, as ledger.App's does (docs/LEDGER.md, "App hash").
//
// Stores are pebble (CometBFT v1's default, pure Go). Its log goes to the
// Node's logger, at debug.
//
// # Replay
//
// The Machine and CometBFT persist separately, and a crash can come
// between the two. At start CometBFT asks the Machine for its last
// committed height and app hash (Info) and replays, from its block store,
// every block the Machine lacks, through FinalizeBlock and Commit as when
// they were first decided; a Machine with nothing (a wiped data directory)
// first gets InitChain, then every block. A Machine ahead of the blocks, or
// whose app hash for a height is not the chain's, cannot be reconciled:
// Start refuses it with an error (CometBFT panics there; Start recovers).
//
// Known limits, all CometBFT v1.0.1's: every Start leaves two idle
// goroutines behind, the consensus write-ahead log's file watchers (its
// Group.Close closes the file but not its AutoFile); the pruners and the
// per-peer gossip routines notice Stop only after their current sleep (up
// to storage.pruning.interval, 10 s, and 2 s), which is why every store is
// wrapped to answer reads after Stop with nothing instead of pebble's panic
// on a closed store; and a Start that fails inside CometBFT's node
// constructor leaves its event bus and indexer goroutines running.
package engine
