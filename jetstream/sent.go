package jetstream

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// SentUpTo returns, per auction, the sequence of the last decision whose
// requests the outbound bridge finished with: recorded as sent
// (out.sent) or given up (out.undelivered). The bridge reads it once at
// start and keeps it in memory: no log read per send.
func (l *Log) SentUpTo(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	filters := []string{
		messages.Subject("*", messages.KindOut, messages.TypeSent),
		messages.Subject("*", messages.KindOut, messages.TypeUndelivered),
	}
	err := l.lastPerSubject(ctx, filters, func(d Delivery) error {
		var rec struct {
			Item   string `json:"item"`
			OutSeq uint64 `json:"out_seq"`
		}
		if err := json.Unmarshal(d.Data, &rec); err != nil {
			return fmt.Errorf("decode the record %d on %s: %w", d.Seq, d.Subject, err)
		}
		out[rec.Item] = max(out[rec.Item], rec.OutSeq)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read what the outbound bridge sent: %w", err)
	}
	return out, nil
}

// ConsumerInfos lists every consumer of the stream, for metrics.
func (l *Log) ConsumerInfos(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	lister := l.stream.ListConsumers(ctx)
	var out []*jetstream.ConsumerInfo
	for info := range lister.Info() {
		out = append(out, info)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	return out, nil
}
