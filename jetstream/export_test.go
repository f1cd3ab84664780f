package jetstream

import "github.com/nats-io/nats.go/jetstream"

// Stream is the stream handle, for tests that inspect what was stored.
func (l *Log) Stream() jetstream.Stream { return l.stream }

// CloseConnection closes the log's NATS connection, as a crash would.
func CloseConnection(l *Log) { l.nc.Close() }
