package jetstream

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Sentinel errors, for errors.Is.
var (
	// ErrConflict means another writer decided for the same auction first
	// (the decision fence moved, or the decision is stored already):
	// reload the auction's last decision and decide again.
	ErrConflict = errors.New("concurrent decision for the same auction")
	// ErrNotFound means the log holds nothing for the request.
	ErrNotFound = errors.New("not found in the log")
	// ErrExists means an append fenced on "first of its subject" found one.
	ErrExists = errors.New("already in the log")
	// ErrFull means the stream refused a write because it reached a limit
	// (MaxMsgs, MaxBytes, the server's storage): nothing was written.
	ErrFull = errors.New("the event log is full")
	// ErrUnavailable means there is no connection to the log right now.
	ErrUnavailable = errors.New("the event log is unavailable")
)

// JetStream API error codes the log tells apart. nats.go names some of
// them; the rest are named here after nats-server's errors.json.
const (
	codeWrongLastSequence    = jetstream.JSErrCodeStreamWrongLastSequence         // 10071: a fence moved
	codeWrongLastSeqConstant = jetstream.JSErrCodeStreamWrongLastSequenceConstant // 10164: the same, on a replicated stream
	codeStoreFailed          = jetstream.ErrorCode(10077)                         // JSStreamStoreFailedF: "maximum messages/bytes exceeded" among others
	codeInsufficientStorage  = jetstream.ErrorCode(10047)                         // JSStorageResourcesExceededErr: the server's or account's storage
	codeClusterNotAvailable  = jetstream.ErrorCode(10008)                         // JSClusterNotAvailErr: JetStream system temporarily unavailable
	codeClusterNoPeers       = jetstream.ErrorCode(10005)                         // JSClusterNoPeersErrF: no suitable peers for placement
	codeNoResources          = jetstream.ErrorCode(10023)                         // JSInsufficientResourcesErr: too few peers yet, on a cluster forming
)

func apiCode(err error) (jetstream.ErrorCode, string, bool) {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode, apiErr.Description, true
	}
	return 0, "", false
}

// isWrongLastSequence recognises a write refused by its fence.
func isWrongLastSequence(err error) bool {
	code, _, ok := apiCode(err)
	return ok && (code == codeWrongLastSequence || code == codeWrongLastSeqConstant)
}

// isFull recognises a write refused for lack of space: a stream limit with
// DiscardNew or the server's storage. 10077 also covers other store
// failures, which the description tells apart; nats-server has no finer
// code for a limit reached under DiscardNew.
func isFull(err error) bool {
	code, desc, ok := apiCode(err)
	switch {
	case !ok:
		return false
	case code == codeInsufficientStorage:
		return true
	case code == codeStoreFailed && strings.Contains(desc, "exceeded"):
		return true
	}
	return false
}
