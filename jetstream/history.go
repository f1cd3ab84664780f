package jetstream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// Record is one stored message, as the history shows it.
type Record struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Data    json.RawMessage
}

// History returns every message of one auction in log order.
func (l *Log) History(ctx context.Context, item string) ([]Record, error) {
	return l.read(ctx, messages.ItemFilter(item), 0)
}

// HistoryUpTo returns an auction's messages up to and including seq.
func (l *Log) HistoryUpTo(ctx context.Context, item string, seq uint64) ([]Record, error) {
	return l.read(ctx, messages.ItemFilter(item), seq)
}

// read drains an ordered consumer over filter; upTo > 0 stops there.
// Stream info tells up front whether there is anything to read, so an
// empty history costs no consumer.
func (l *Log) read(ctx context.Context, filter string, upTo uint64) ([]Record, error) {
	info, err := l.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("stream info for %s: %w", filter, err)
	}
	if len(info.State.Subjects) == 0 {
		return nil, nil
	}
	cons, err := l.stream.OrderedConsumer(ctx, readerConfig(jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	defer l.deleteReader(ctx, cons, nil)
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	defer it.Stop()
	var out []Record
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filter, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filter, err)
		}
		if upTo > 0 && meta.Sequence.Stream > upTo {
			return out, nil
		}
		out = append(out, Record{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Time: meta.Timestamp, Data: msg.Data()})
		if meta.NumPending == 0 {
			return out, nil
		}
	}
}
